"""Diffusion Transformer (DiT, Peebles & Xie 2023, "Scalable Diffusion Models with Transformers",
https://arxiv.org/abs/2212.09748): a drop-in replacement for :class:`genlit.nets.unet.UNet`.

``DiT(data_shape, num_classes)(x, t, y)`` maps noisy images ``x`` (B, C, H, W), timesteps ``t`` (B,) and
labels ``y`` (B,) to a tensor of the shape of ``x`` (the prediction of the noise, of ``x0`` or of ``v``; the
family decides which). The image is cut into ``p x p`` patches (``p = patch_size``), a stride-``p``
convolution turns each into one token, and a plain Vision Transformer runs on the tokens:

=========================  ==================================================================
``x``                      (B, C, H, W)
patchify (conv, stride p)  (B, N, D) with N = (H / p) * (W / p) tokens of width D = hidden_size
+ positional embedding     fixed 2-D sin-cos (a buffer computed in code, not trained)
``depth`` DiT blocks       (B, N, D), each conditioned on c = time embedding (+ label embedding)
final layer                (B, N, p * p * C): LayerNorm, adaLN shift/scale, linear
unpatchify                 (B, C, H, W)
=========================  ==================================================================

Conditioning is **adaLN-Zero** (the paper's best variant, section 3.2): every block's LayerNorms have no
parameters of their own; an MLP ``SiLU -> Linear`` of ``c`` produces, per block, a shift, a scale and a
gate for the attention branch and for the MLP branch, ``x = x + gate * branch(norm(x) * (1 + scale) +
shift)``. That Linear is zero-initialised, so every gate starts at 0 and every block is the identity, and
the final linear layer is zero-initialised too: a fresh DiT is exactly the zero predictor, like the U-Net.

Timesteps are embedded with :func:`genlit.nets.unet.sinusoidal_embedding` of their float value (so scaled
or non-integer ``t``, e.g. EDM's ``c_noise``, works), then by an MLP with SiLU; keep ``t`` on a scale of
about [0, 1000] (see the U-Net's docstring). Class conditioning (``num_classes > 0``) adds
``nn.Embedding(num_classes + 1, hidden_size)`` to the time embedding; label ``null_label == num_classes``
is the "no class" label of classifier-free guidance. A conditional net requires ``y``; an unconditional
net ignores it and has ``null_label = None``.

Any channel count and any H, W divisible by ``patch_size`` (square or not) work; the positional embedding
is built for the grid. ``hidden_size`` must be divisible by ``num_heads``.

Default size, for CPU training on 28 px MNIST (``patch_size=2``: 196 tokens of 2x2 pixels; ``hidden_size=96``,
``depth=4``, ``num_heads=4``, ``mlp_ratio=4``): 707,428 parameters (grey, unconditional; +1,056 for 10
classes), about as many as the default U-Net's 720,001, of which 34% are the adaLN modulation layers.
measured: about 725 ms per training step (forward + backward + Adam) at batch 64 on 1 CPU thread (median of
3 runs of 6 steps), against about 245 ms for the default U-Net measured the same way in the same run: 2.9x.
The step costs about 45 GFLOP (the U-Net's: 28), a quarter of it attention over the 196 tokens, and runs
slower per FLOP (LayerNorm, GELU and modulation are memory-bound). The cost is set by the number of tokens:
``patch_size=4, depth=6`` (49 tokens, 1,044,400 parameters) measured about 222 ms in the same run (0.9x the
U-Net), with coarser patches (the paper's FID improves as the patch shrinks at equal parameters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlit.nets.dcgan import check_labels
from genlit.nets.unet import Context, CrossAttention, check_context, masked_mean, sinusoidal_embedding


def _divisors(n: int) -> list[int]:
    """The divisors of ``n`` strictly between 1 and ``n`` (or ``[1]`` when there is none)."""
    found = [d for d in range(2, n) if n % d == 0]
    return found or [1]


def _check_config(data_shape: tuple[int, ...], patch_size: int, hidden_size: int, depth: int, num_heads: int) -> None:
    """Validate the DiT configuration for ``data_shape`` (C, H, W); one-line errors that name the fix."""
    shape = tuple(data_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"DiT needs an image data_shape (C, H, W), got {shape}")
    if patch_size < 1 or depth < 1 or num_heads < 1 or hidden_size < 1:
        raise ValueError(
            f"DiT needs patch_size, hidden_size, depth and num_heads >= 1, got {patch_size}, {hidden_size}, "
            f"{depth} and {num_heads}"
        )
    _, h, w = shape
    if h % patch_size or w % patch_size:
        side = str(h) if h == w else f"{h} and {w}"
        g = math.gcd(h, w)
        choices = ", ".join(map(str, _divisors(g)))
        raise ValueError(
            f"DiT patch_size {patch_size} does not divide the {h}x{w} image; use a patch size that divides "
            f"{side} ({choices})"
        )
    if hidden_size % num_heads:
        fits = [n for n in range(1, min(hidden_size, 16) + 1) if hidden_size % n == 0]
        raise ValueError(
            f"DiT num_heads {num_heads} does not divide hidden_size {hidden_size}; use num_heads in "
            f"{tuple(fits)} or a hidden_size that is a multiple of {num_heads}"
        )


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos positional embedding (grid_h * grid_w, dim), tokens in row-major order.

    The first ``dim // 2`` features are :func:`~genlit.nets.unet.sinusoidal_embedding` of the row index, the
    other ``dim - dim // 2`` that of the column index (as in MAE and DiT: one 1-D embedding per axis).
    """
    rows = torch.arange(grid_h, dtype=torch.float32).repeat_interleave(grid_w)  # (N,) row of each token
    cols = torch.arange(grid_w, dtype=torch.float32).repeat(grid_h)  # (N,) column of each token
    return torch.cat([sinusoidal_embedding(rows, dim // 2), sinusoidal_embedding(cols, dim - dim // 2)], dim=1)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` for tokens ``x`` (B, N, D) and per-sample ``shift``, ``scale`` (B, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, N, D) with ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads)  # (B, N, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, hd) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, hd)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning: ``c`` (B, D) gives shift, scale and gate of the
    attention and the MLP branch; the modulation Linear starts at zero, so the block starts as the identity."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, context_dim: int = 0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        if context_dim:  # text: cross-attention after self-attention, unmodulated (PixArt-alpha, Chen et al. 2023)
            self.cross_norm = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, context_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, context: Context = None) -> Tensor:
        """Map tokens ``x`` (B, N, D), the conditioning ``c`` (B, D) and the text context (embeddings (B, L, Dc)
        and their padding mask (B, L), of a text-conditional block) to (B, N, D)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=1)  # (B, D) each
        x = x + gate1[:, None, :] * self.attn(_modulate(self.norm1(x), shift1, scale1))  # (B, N, D)
        if context is not None:
            x = x + self.cross(self.cross_norm(x), *context)  # (B, N, D)
        return x + gate2[:, None, :] * self.mlp(_modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class FinalLayer(nn.Module):
    """LayerNorm, adaLN shift and scale from ``c``, then a zero-initialised linear to ``p * p * C`` per token."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=1)  # (B, D) each
        return self.linear(_modulate(self.norm(x), shift, scale))  # (B, N, p * p * C)


class DiT(nn.Module):
    """Diffusion Transformer: ``(x, t, y) ->`` a tensor shaped like ``x`` (see the module docstring).

    ``patch_size`` is the side of the square patches (it must divide H and W), ``hidden_size`` the token
    width, ``depth`` the number of DiT blocks, ``num_heads`` the attention heads (they must divide
    ``hidden_size``) and ``mlp_ratio`` the width of each block's MLP as a multiple of ``hidden_size``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        patch_size: int = 2,
        hidden_size: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        context_dim: int = 0,
    ):
        super().__init__()
        _check_config(data_shape, patch_size, hidden_size, depth, num_heads)
        if num_classes < 0 or mlp_ratio <= 0 or context_dim < 0:
            raise ValueError(f"DiT needs num_classes >= 0, mlp_ratio > 0 and context_dim >= 0, got {num_classes}, "
                             f"{mlp_ratio} and {context_dim}")  # fmt: skip
        self.context_dim = context_dim
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.null_label = num_classes if num_classes > 0 else None
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        channels, h, w = self.data_shape
        self.grid = (h // patch_size, w // patch_size)
        self.patch_embed = nn.Conv2d(channels, hidden_size, patch_size, stride=patch_size)
        pos = sincos_position_embedding(*self.grid, hidden_size)  # (N, D)
        self.register_buffer("pos_embed", pos[None], persistent=False)  # (1, N, D), computed, never trained
        self.time_mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.label_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        if context_dim:  # the pooled text joins the conditioning c
            self.context_embed = nn.Linear(context_dim, hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, context_dim) for _ in range(depth))
        self.final = FinalLayer(hidden_size, patch_size * patch_size * channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """As the paper's code: Xavier-uniform linears (and patch projection), N(0, 0.02) for the time MLP and
        the label table, zero biases; then adaLN-Zero: every modulation Linear and the output linear at 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.hidden_size, -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.label_embed is not None:
            nn.init.normal_(self.label_embed.weight, std=0.02)
        crosses = [block.cross.proj for block in self.blocks if hasattr(block, "cross")]  # text branches start off
        for layer in [block.adaLN[1] for block in self.blocks] + [self.final.adaLN[1], self.final.linear] + crosses:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Conditioning (B, hidden_size): time embedding of ``t`` (B,) plus, when conditional, that of ``y``."""
        c = self.time_mlp(sinusoidal_embedding(t, self.hidden_size))  # (B, D)
        if self.label_embed is not None:
            c = c + self.label_embed(y)  # (B, D)
        return c

    def patchify(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, N, D) with the positional embedding added."""
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """Per-token patches (B, N, p * p * C) -> images (B, C, H, W)."""
        b, p, (c, h, w), (gh, gw) = tokens.shape[0], self.patch_size, self.data_shape, self.grid
        patches = tokens.reshape(b, gh, gw, p, p, c)  # (B, gh, gw, p, p, C)
        return patches.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)  # (B, C, gh * p, gw * p)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None, context_mask=None
    ) -> Tensor:
        """Denoiser output (B, C, H, W) for noisy images ``x`` (B, C, H, W), timesteps ``t`` (B,) (int or
        float; a 0-d ``t`` is broadcast to the batch) and labels ``y`` (B,) in ``[0, num_classes]``, where
        ``num_classes`` is :attr:`null_label` (required when conditional, ignored otherwise). A text-conditional
        DiT (``context_dim > 0``) also reads ``context`` (B, L, context_dim) where ``context_mask`` (B, L) is
        True."""
        b = x.shape[0]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"DiT expects x of shape (B, {', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}"
            )
        t = t.expand(b) if t.dim() == 0 else t
        if t.shape != (b,):
            raise ValueError(f"DiT expects timesteps t of shape ({b},), got {tuple(t.shape)}")
        check_labels("DiT", self.num_classes, y, b)
        ctx = check_context("DiT", self.context_dim, context, context_mask, b)
        c = self.embed(t, y)  # (B, D)
        if ctx is not None:
            c = c + self.context_embed(masked_mean(*ctx))  # (B, D)
        tokens = self.patchify(x)  # (B, N, D)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)  # (B, N, D)
        return self.unpatchify(self.final(tokens, c))  # (B, C, H, W)
