"""U-Net denoiser for diffusion models (DDPM, Ho et al. 2020, https://arxiv.org/abs/2006.11239).

``UNet(data_shape, num_classes)(x, t, y)`` maps noisy images ``x`` (B, C, H, W), timesteps ``t`` (B,)
and labels ``y`` (B,) to a tensor of the shape of ``x``: the prediction of the noise, of ``x0`` or of
``v``; the net does not know which, the family does. With the improvements of Nichol & Dhariwal 2021
(https://arxiv.org/abs/2102.09672) and Dhariwal & Nichol 2021 (https://arxiv.org/abs/2105.05233) that
cost little: multi-head self-attention at chosen resolutions, scale-shift (FiLM) conditioning of the
residual blocks on the time (+ class) embedding, and zero-initialised residual branches and output
convolution, so a fresh net is exactly the zero predictor and every residual block starts as the identity.

The net has ``len(channel_mults)`` levels; level ``i`` works at side ``size / 2**i`` with
``channels * channel_mults[i]`` channels, so the side must be divisible by ``2**(len(channel_mults) - 1)``:

========  =====================  ===========================================================
size      channel_mults          feature-map sides (valid ``attention_resolutions``)
========  =====================  ===========================================================
28        (1, 2, 4) (default)    28 -> 14 -> 7 (at most 3 levels: 7 is odd); attention at 7
32        (1, 2, 4) or 4 levels  32 -> 16 -> 8, or 32 -> 16 -> 8 -> 4; attention at 8
64        (1, 2, 2, 4)           64 -> 32 -> 16 -> 8; attention at 16 and/or 8
========  =====================  ===========================================================

The default ``attention_resolutions=(7,)`` fits 28 px with 3 levels; other sizes must name their own
sides (a side that no level has is an error that lists the valid ones).

Timesteps are embedded with the sinusoidal embedding of Vaswani et al. 2017
(https://arxiv.org/abs/1706.03762) of their float value, so scaled or non-integer ``t`` works, then by
an MLP with SiLU. The angular frequencies run from 1 down to 1/10000, so keep ``t`` on a scale of about
[0, 1000] (multiply a continuous time in [0, 1] by 1000) or nearby times get nearly equal embeddings.

Class conditioning (``num_classes > 0``): ``nn.Embedding(num_classes + 1, time_embed_dim)`` is added to
the time embedding. Label ``null_label == num_classes`` is the "no class" label of classifier-free
guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598): train with a fraction of the labels
replaced by ``null_label`` and sample with both. A conditional net requires ``y``; an unconditional net
ignores it and has ``null_label = None``.

Default size, for CPU training on 28 px MNIST (``channels=16``, ``channel_mults=(1, 2, 4)``, one res block
per level, attention at 7x7, time embedding 64): 720,001 parameters (grey, unconditional; +704 for
10 classes). measured: about 225 ms per training step (forward + backward + Adam) at batch 64 on 2 CPU
cores (median of 3 runs of 6 steps; the step costs about 28 GFLOP). The convolutions are compute-bound
(about 100-165 GFLOP/s here), so cost grows with ``channels**2``: ``channels=16, channel_mults=(1, 2, 2)``
(0.30M) takes about 190 ms and ``channels=32, channel_mults=(1, 2, 2)`` (1.19M) about 455 ms.
Parameters at 7x7 cost about 19 GFLOP (~150 ms) per million per step at batch 64, so 1-3M parameters in
~100 ms is out of reach for this architecture on 2 cores; the default trades width for steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlit.nets.dcgan import check_labels

_CHANNELS = (1, 3)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B, dim) of float timesteps ``t`` (B,) (Vaswani et al. 2017, section 3.5).

    With ``half = dim // 2`` and ``freq_k = max_period ** (-k / half)`` for ``k < half``, the embedding is
    ``[cos(t * freq_0), ..., cos(t * freq_{half-1}), sin(t * freq_0), ..., sin(t * freq_{half-1})]``,
    followed by one zero column when ``dim`` is odd.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)  # (half,)
    freqs = torch.exp(-math.log(max_period) * k / half)  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


def _zero_(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (the residual branch starts switched off); returns it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block: GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> FiLM(emb) -> SiLU -> dropout -> conv3x3.

    The embedding (time + class) gives a per-channel scale and shift applied after the second
    normalisation, ``h = norm(h) * (1 + scale) + shift`` (Dhariwal & Nichol 2021, "AdaGN"). The last
    conv is zero-initialised; a 1x1 conv matches the skip when the channel count changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Map ``x`` (B, in_ch, H, W) and the embedding ``emb`` (B, emb_dim) to (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift  # (B, out, H, W)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, out, H, W)
        return self.skip(x) + h  # (B, out, H, W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual, with a zero-initialised
    output projection (Ho et al. 2020; Nichol & Dhariwal 2021 use several heads)."""

    def __init__(self, ch: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = _zero_(nn.Linear(ch, ch))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """Attend over the positions of ``x`` (B, C, H, W); ``emb`` is ignored (uniform block interface)."""
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C), N = H * W
        qkv = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads)  # (B, N, 3, nh, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, d) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, d)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # (B, N, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean (B, D) of the tokens (B, L, D) where ``mask`` (B, L) is True (every row has one)."""
    weights = mask.to(tokens.dtype)[..., None]  # (B, L, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, D)


class CrossAttention(nn.Module):
    """Multi-head attention of tokens (B, N, dim) to a context (B, L, context_dim) (the text's embeddings), the
    padded context positions masked out, with a zero-initialised output projection (the branch starts off).
    Queries from the tokens, keys and values from the context (Rombach et al. 2022, https://arxiv.org/abs/2112.10752,
    section 3.3)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = _zero_(nn.Linear(dim, dim))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """Attend from ``x`` (B, N, dim) to the positions of ``context`` (B, L, Dc) where ``mask`` (B, L) is True."""
        b, n, d = x.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        q = self.q(x).view(b, n, heads, head_dim).transpose(1, 2)  # (B, nh, N, hd)
        kv = self.kv(context).view(b, context.shape[1], 2, heads, head_dim)  # (B, L, 2, nh, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, L, hd) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :])  # (B, nh, N, hd)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, dim)


class SpatialCrossAttention(nn.Module):
    """:class:`CrossAttention` from the H*W positions of a feature map (GroupNorm first), residual."""

    def __init__(self, ch: int, context_dim: int, num_heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.attn = CrossAttention(ch, context_dim, num_heads)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """``x`` (B, C, H, W) plus what its positions read from ``context`` (B, L, Dc) where ``mask`` (B, L)."""
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        return x + self.attn(tokens, context, mask).transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)


Context = tuple[Tensor, Tensor] | None  # text embeddings (B, L, Dc) and their padding mask (B, L), or None


class _Stage(nn.Module):
    """A residual block, optionally followed by self-attention and cross-attention to a text context."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None, cross: SpatialCrossAttention | None = None):
        super().__init__()
        self.res = res
        self.attn = attn
        if cross is not None:  # registered only when present: class-conditional checkpoints keep their keys
            self.cross = cross

    def forward(self, x: Tensor, emb: Tensor, context: Context = None) -> Tensor:
        h = self.res(x, emb)  # (B, out, H, W)
        h = self.attn(h) if self.attn is not None else h
        cross = getattr(self, "cross", None)
        return cross(h, *context) if cross is not None else h  # (B, out, H, W)


_StageFactory = Callable[[int, int, int], _Stage]  # (in channels, out channels, side) -> stage


class Downsample(nn.Module):
    """Stride-2 conv3x3: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling and conv3x3: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


def _check_config(
    data_shape: tuple[int, ...], channels: int, mults: tuple[int, ...], attn: tuple[int, ...], heads: int, groups: int
) -> list[int]:
    """Validate the U-Net configuration for ``data_shape``; return the feature-map side of every level."""
    shape = tuple(data_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[0] not in _CHANNELS:
        raise ValueError(f"UNet needs a square image data_shape (C, H, W) with C in {_CHANNELS}, got {shape}")
    size, levels = shape[1], len(mults)
    if levels < 1 or min(mults) < 1 or channels < 1:
        raise ValueError(f"UNet needs channels >= 1 and positive channel_mults, got {channels} and {mults}")
    if size % 2 ** (levels - 1):
        max_levels = (size & -size).bit_length()  # 1 + the number of times size halves exactly
        step = 2 ** (levels - 1)
        raise ValueError(
            f"image size {size} cannot be halved {levels - 1} times by channel_mults {mults}; use at most "
            f"{max_levels} levels for {size} px or pad/resize the data to {-(-size // step) * step}"
        )
    sides = [size // 2**i for i in range(levels)]
    bad = [r for r in attn if r not in sides]
    if bad:
        raise ValueError(
            f"attention_resolutions {bad} match no level of this UNet; the feature-map sides of {size} px "
            f"with channel_mults {mults} are {tuple(sides)}"
        )
    widths = sorted({channels * m for m in mults} | {channels})
    if any(w % groups for w in widths):
        raise ValueError(f"groups={groups} must divide every channel count {widths}; change groups or channels")
    attn_widths = sorted({channels * m for m, s in zip(mults, sides, strict=True) if s in attn})
    if any(w % heads for w in attn_widths):
        raise ValueError(f"num_heads={heads} must divide the channel counts {attn_widths} of the attention levels")
    return sides


class UNet(nn.Module):
    """Diffusion U-Net: ``(x, t, y) -> `` a tensor shaped like ``x`` (see the module docstring).

    ``channels`` is the width of the first level; level ``i`` has ``channels * channel_mults[i]`` channels,
    ``num_res_blocks`` residual blocks on the way down and ``num_res_blocks + 1`` on the way up (each taking
    one concatenated skip connection), and self-attention after each of its blocks when its side is in
    ``attention_resolutions``. The middle block (res, attention if the last side matches, res) works at the
    lowest resolution. ``groups`` is the GroupNorm group count, ``time_embed_mult * channels`` the width of
    the time (+ class) embedding, ``dropout`` acts inside the residual blocks.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (7,),
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 8,
        time_embed_mult: int = 4,
        context_dim: int = 0,
    ):
        super().__init__()
        mults, attn = tuple(channel_mults), tuple(attention_resolutions)
        sides = _check_config(data_shape, channels, mults, attn, num_heads, groups)
        if num_classes < 0 or num_res_blocks < 1 or time_embed_mult < 1 or context_dim < 0:
            raise ValueError("UNet needs num_classes >= 0, num_res_blocks >= 1, time_embed_mult >= 1, context_dim >= 0")
        if context_dim and not attn:
            raise ValueError("a text-conditional UNet (context_dim > 0) cross-attends at its attention_resolutions; "
                             "name at least one")  # fmt: skip
        self.context_dim = context_dim
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.null_label = num_classes if num_classes > 0 else None
        self.time_embed_dim = emb_dim = channels * time_embed_mult
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        if context_dim:  # the pooled text joins the time embedding (Saharia et al. 2022, section 2.2)
            self.context_embed = nn.Linear(context_dim, emb_dim)
        self.input_conv = nn.Conv2d(self.data_shape[0], channels, 3, padding=1)

        def stage(cin: int, cout: int, side: int) -> _Stage:
            attention = SelfAttention(cout, num_heads, groups) if side in attn else None
            cross = (
                SpatialCrossAttention(cout, context_dim, num_heads, groups) if context_dim and side in attn else None
            )
            return _Stage(ResBlock(cin, cout, emb_dim, groups, dropout), attention, cross)

        self.down, skips = self._build_down(stage, channels, mults, sides, num_res_blocks)
        mid = channels * mults[-1]
        self.middle = nn.ModuleList([stage(mid, mid, sides[-1]), ResBlock(mid, mid, emb_dim, groups, dropout)])
        self.up = self._build_up(stage, channels, mults, sides, num_res_blocks, skips)
        top = channels * mults[0]  # the decoder ends at the width of level 0
        self.out = nn.Sequential(
            nn.GroupNorm(groups, top), nn.SiLU(), _zero_(nn.Conv2d(top, self.data_shape[0], 3, padding=1))
        )

    @staticmethod
    def _build_down(
        stage: _StageFactory, channels: int, mults: tuple[int, ...], sides: list[int], num_res_blocks: int
    ) -> tuple[nn.ModuleList, list[int]]:
        """Encoder blocks and the channel count of every skip connection they leave (input conv first)."""
        blocks, skips, ch = nn.ModuleList(), [channels], channels
        for level, (mult, side) in enumerate(zip(mults, sides, strict=True)):
            for _ in range(num_res_blocks):
                blocks.append(stage(ch, channels * mult, side))
                ch = channels * mult
                skips.append(ch)
            if level < len(mults) - 1:
                blocks.append(Downsample(ch))
                skips.append(ch)
        return blocks, skips

    @staticmethod
    def _build_up(
        stage: _StageFactory,
        channels: int,
        mults: tuple[int, ...],
        sides: list[int],
        num_res_blocks: int,
        skips: list[int],
    ) -> nn.ModuleList:
        """Decoder blocks, each residual block consuming one skip connection (last in, first out)."""
        blocks, skips, ch = nn.ModuleList(), list(skips), channels * mults[-1]
        for level in reversed(range(len(mults))):
            for _ in range(num_res_blocks + 1):
                blocks.append(stage(ch + skips.pop(), channels * mults[level], sides[level]))
                ch = channels * mults[level]
            if level > 0:
                blocks.append(Upsample(ch))
        return blocks

    def embed(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Time (+ class) embedding (B, time_embed_dim) of timesteps ``t`` (B,) and labels ``y`` (B,)."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim))  # (B, E)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y)  # (B, E)
        return emb

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None, context_mask=None
    ) -> Tensor:
        """Denoiser output (B, C, H, W) for noisy images ``x`` (B, C, H, W), timesteps ``t`` (B,) (int or
        float; a 0-d ``t`` is broadcast to the batch) and labels ``y`` (B,) in ``[0, num_classes]``, where
        ``num_classes`` is :attr:`null_label` (required when conditional, ignored otherwise). A text-conditional
        net (``context_dim > 0``) also reads ``context`` (B, L, context_dim), the text's embeddings, where
        ``context_mask`` (B, L) is True (padded positions are ignored)."""
        b = x.shape[0]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"UNet expects x of shape (B, {', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}"
            )
        t = t.expand(b) if t.dim() == 0 else t
        if t.shape != (b,):
            raise ValueError(f"UNet expects timesteps t of shape ({b},), got {tuple(t.shape)}")
        check_labels("UNet", self.num_classes, y, b)
        ctx = check_context("UNet", self.context_dim, context, context_mask, b)
        emb = self.embed(t, y)  # (B, E)
        if ctx is not None:
            emb = emb + self.context_embed(masked_mean(*ctx))  # (B, E)
        h = self.input_conv(x)  # (B, ch, H, W)
        skips = [h]
        for block in self.down:
            h = _apply(block, h, emb, ctx)  # (B, ch_i, s_i, s_i)
            skips.append(h)
        for block in self.middle:
            h = _apply(block, h, emb, ctx)  # (B, ch_last, s_last, s_last)
        for block in self.up:
            h = block(h, emb) if isinstance(block, Upsample) else block(torch.cat([h, skips.pop()], dim=1), emb, ctx)
        return self.out(h)  # (B, C, H, W)


def _apply(block: nn.Module, h: Tensor, emb: Tensor, ctx: Context) -> Tensor:
    """A stage reads the text context too; the other blocks (resampling, the middle ResBlock) do not."""
    return block(h, emb, ctx) if isinstance(block, _Stage) else block(h, emb)


def check_context(name: str, context_dim: int, context: Tensor | None, mask: Tensor | None, b: int) -> Context:
    """The text context ``(context (B, L, context_dim), mask (B, L) bool)`` of a text-conditional net (all
    positions valid when ``mask`` is None), or None for a net without one; one clear error for a mismatch."""
    if not context_dim:
        if context is not None:
            raise ValueError(f"this {name} has no text conditioning (context_dim 0); call it without a context")
        return None
    if context is None or context.dim() != 3 or context.shape[0] != b or context.shape[2] != context_dim:
        got = None if context is None else tuple(context.shape)
        raise ValueError(f"this text-conditional {name} needs a context of shape ({b}, L, {context_dim}), got {got}")
    if mask is None:
        mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
    if mask.shape != context.shape[:2]:
        raise ValueError(f"{name}: context_mask must have shape {tuple(context.shape[:2])}, got {tuple(mask.shape)}")
    return context, mask.bool()
