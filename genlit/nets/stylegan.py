"""StyleGAN2 generator and discriminator (Karras et al. 2020, https://arxiv.org/abs/1912.04958), with the
mapping network, noise inputs, truncation and style mixing of StyleGAN (Karras et al. 2019,
https://arxiv.org/abs/1812.04948).

Both nets take ``data_shape = (C, H, W)``, ``C`` in {1, 3}, square images of side ``H = base * 2**n`` with
``base`` in 4..7 and ``n >= 1`` (28 = 7 * 4, 32 = 4 * 8, 64 = 4 * 16). Resolution ``res`` has
``min(channels * H // res, max_channels)`` channels. Weights use ProGAN's equalized learning rate
(https://arxiv.org/abs/1710.10196, sec. 4.1); activations are LeakyReLU(0.2) * sqrt(2).
Class conditioning (``num_classes > 0``): a normalised class embedding joins ``z`` in the mapping network
(StyleGAN2-ADA, https://arxiv.org/abs/2006.06676); the discriminator ends in the projection head of
:mod:`genlit.nets.dcgan` (Miyato & Koyama 2018). Unconditional nets accept and ignore ``y``.
Progressive growing (``growth``, Karras et al. 2018, https://arxiv.org/abs/1710.10196): see
:mod:`genlit.nets.progressive`; both nets then keep the count of real images D has seen, and G and D need the
same schedule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlit.nets.dcgan import ProjectionHead, check_labels
from genlit.nets.progressive import (
    ProgressiveGrowth,
    fade_in,
    growth_clock,
    growth_state,
    to_full_resolution,
    to_resolution,
)
from genlit.nets.style_layers import (
    NOISE_MODES,
    DiscriminatorBlock,
    EqualizedConv2d,
    EqualizedLinear,
    MappingNetwork,
    MinibatchStdDev,
    ModulatedConv2d,
    NoiseMode,
    SynthesisLayer,
    lrelu,
    upsample,
)


def check_stylegan_shape(data_shape: tuple[int, ...], owner: str) -> tuple[int, int, int]:
    """Return ``(channels, size, base)`` of a supported ``(C, H, W)`` shape or raise one clear ValueError."""
    shape = tuple(data_shape)
    if len(shape) != 3:
        raise ValueError(f"{owner} needs an image data_shape (C, H, W), got {shape}")
    c, h, w = shape
    base = h
    while base > 7 and base % 2 == 0:
        base //= 2
    if h != w or not 4 <= base <= 7 or base == h:
        raise ValueError(
            f"image size {h}x{w} is not supported by {owner}; use square images of side base * 2**n with base "
            "in 4..7 and n >= 1 (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, ..., 128, 256)"
        )
    if c not in (1, 3):
        raise ValueError(f"{c} image channels are not supported by {owner}; use 1 or 3")
    return c, h, base


def _to_rgb(in_channels: int, image_channels: int, w_dim: int) -> ModulatedConv2d:
    """StyleGAN2's ToRGB: a modulated 1x1 conv without demodulation, with bias."""
    return ModulatedConv2d(in_channels, image_channels, 1, w_dim, demodulate=False, bias=True)


def _widths(size: int, base: int, channels: int, max_channels: int) -> list[tuple[int, int]]:
    """``(resolution, channels)`` from ``base`` up to ``size``."""
    res = [base * 2**i for i in range(int(math.log2(size // base)) + 1)]
    return [(r, min(channels * (size // r), max_channels)) for r in res]


class StyleGANGenerator(nn.Module):
    """StyleGAN2 generator, skip architecture (https://arxiv.org/abs/1912.04958, fig. 7b):
    ``z`` (B, latent_dim) -> image (B, C, H, W).

    A learned constant at the base resolution, then per resolution two :class:`SynthesisLayer` (the first
    of each higher resolution upsamples 2x) and a ToRGB (modulated 1x1 conv, no demodulation) whose output
    is added to the upsampled image so far. ``num_ws = 2 * n + 2`` for ``H = base * 2**n``: one w per layer,
    each ToRGB sharing the next layer's w, as in StyleGAN2. No final tanh by default (StyleGAN2 has none): a
    trained generator's images are roughly in [-1, 1] (at init their std is above 1). ``tanh_output`` squashes the
    image with tanh, for data whose pixels sit at the ends of the range (MNIST's background is exactly -1, which a
    linear output with per-pixel noise inputs never matches, and D tells real from fake by it).

    Noise: ``noise_mode=None`` means "random" in training mode and "const" in eval mode, so eval-mode
    sampling is a deterministic function of ``z``. ``w_avg`` is an EMA (beta ``w_avg_beta``) of the
    batch mean of w, updated by training-mode forwards only; it is the centre of the truncation trick
    (StyleGAN, sec. B). ``mixing_prob`` (style mixing regularisation, StyleGAN sec. 3.1) replaces, per
    sample with that probability, the ws after a random crossover by those of a second ``z`` ~ N(0, I);
    its default (forward's ``None``) is the constructor's ``mixing_prob`` in training and 0 in eval mode.

    Progressive growing (``growth``, :class:`~genlit.nets.progressive.ProgressiveGrowth`): the synthesis
    stops at the current resolution (the layers above it are not run, their ws are ignored) and the image is
    upsampled (nearest) to the full resolution. While resolution ``r`` fades in with weight ``alpha``, the
    image is ``alpha * image_r + (1 - alpha) * nearest_upsample(image_{r/2})`` (ProGAN, fig. 2), so at
    ``alpha = 0`` G's output is exactly the previous resolution's and at ``alpha = 1`` that of the skip
    architecture (whose own skip connections upsample bilinearly). None: no growing, the net of StyleGAN2.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channels: int = 32,
        max_channels: int = 128,
        mixing_prob: float = 0.0,
        w_avg_beta: float = 0.995,
        growth: ProgressiveGrowth | None = None,
        tanh_output: bool = False,
    ):
        super().__init__()
        image_channels, size, base = check_stylegan_shape(data_shape, "StyleGANGenerator")
        if not 0.0 <= mixing_prob <= 1.0:
            raise ValueError(f"mixing_prob must lie in [0, 1], got {mixing_prob}")
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        self.latent_dim, self.w_dim = latent_dim, w_dim
        self.mixing_prob, self.w_avg_beta = mixing_prob, w_avg_beta
        self.mapping = MappingNetwork(latent_dim, w_dim, num_classes, mapping_layers)
        widths = _widths(size, base, channels, max_channels)
        self.const = nn.Parameter(torch.randn(widths[0][1], base, base))
        self.layers = nn.ModuleList([SynthesisLayer(widths[0][1], widths[0][1], w_dim, base)])
        self.to_rgbs = nn.ModuleList([_to_rgb(widths[0][1], image_channels, w_dim)])
        for (_, c_in), (res, c_out) in zip(widths[:-1], widths[1:], strict=True):
            self.layers.append(SynthesisLayer(c_in, c_out, w_dim, res, up=True))
            self.layers.append(SynthesisLayer(c_out, c_out, w_dim, res))
            self.to_rgbs.append(_to_rgb(c_out, image_channels, w_dim))
        self.num_ws = len(self.layers) + 1
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.tanh_output = tanh_output
        self.growth = growth
        self.growth_clock = growth_clock(growth, [r for r, _ in widths], "StyleGANGenerator")

    def advance_growth(self, images: int) -> None:
        """Count ``images`` more real images seen by D (progressive growing; nothing without ``growth``)."""
        if self.growth_clock is not None:
            self.growth_clock.advance(images)

    def growth_state(self) -> tuple[int, float]:
        """``(resolution, alpha)`` the generator renders at now (without ``growth``: full size, 1.0)."""
        return growth_state(self.growth_clock, self.data_shape[-1])

    def synthesis(self, ws: Tensor, noise_mode: NoiseMode | None = None) -> Tensor:
        """Render styles ``ws`` (B, num_ws, w_dim) to images (B, C, H, W)."""
        if ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis expects ws of shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        mode = self._noise_mode(noise_mode)
        level, alpha = (len(self.to_rgbs) - 1, 1.0) if self.growth_clock is None else self.growth_clock.level()
        x = self.layers[0](self.const.expand(ws.shape[0], -1, -1, -1), ws[:, 0], mode)  # (B, ch, base, base)
        img = self.to_rgbs[0](x, ws[:, 1])  # (B, C, base, base)
        for i in range(1, level + 1):
            j = 2 * i - 1  # first layer of this resolution; its ToRGB uses ws[:, j + 2]
            x = self.layers[j + 1](self.layers[j](x, ws[:, j], mode), ws[:, j + 1], mode)  # (B, ch, r, r)
            new = upsample(img) + self.to_rgbs[i](x, ws[:, j + 2])  # (B, C, r, r)
            img = new if i < level or alpha == 1.0 else fade_in(new, img, alpha)  # (B, C, r, r)
        img = torch.tanh(img) if self.tanh_output else img  # (B, C, r, r)
        return to_full_resolution(img, self.data_shape[-1])  # (B, C, H, W)

    def truncate(self, ws: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """Truncation trick (StyleGAN, sec. B): ``w_avg + psi * (w - w_avg)`` on the first ``cutoff`` ws
        (all when None) of ``ws`` (B, num_ws, w_dim)."""
        if psi == 1.0:
            return ws
        cutoff = self.num_ws if cutoff is None else cutoff
        near = (torch.arange(self.num_ws, device=ws.device) < cutoff)[None, :, None]  # (1, num_ws, 1)
        w_avg = self.w_avg.to(ws.dtype)  # (w_dim,)
        return torch.where(near, w_avg + psi * (ws - w_avg), ws)  # (B, num_ws, w_dim)

    def forward(
        self,
        z: Tensor,
        y: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode | None = None,
        mixing_prob: float | None = None,
    ) -> Tensor:
        """Generate images (B, C, H, W) from ``z`` (B, latent_dim) and labels ``y`` (B,)."""
        w = self.mapping(z, y)  # (B, w_dim)
        if self.training:  # w_avg <- beta * w_avg + (1 - beta) * batch mean of w
            self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w[:, None, :].expand(-1, self.num_ws, -1)  # (B, num_ws, w_dim)
        prob = mixing_prob if mixing_prob is not None else (self.mixing_prob if self.training else 0.0)
        if prob > 0:
            crossover = torch.randint(1, self.num_ws, (z.shape[0],), device=z.device)  # (B,)
            keep = torch.rand(z.shape[0], device=z.device) >= prob  # (B,)
            crossover = crossover.masked_fill(keep, self.num_ws)
            ws = self._mix_ws(ws, self.mapping(torch.randn_like(z), y), crossover)
        return self.synthesis(self.truncate(ws, truncation_psi, truncation_cutoff), noise_mode)

    def mix(
        self,
        z1: Tensor,
        z2: Tensor,
        crossover: int,
        y: Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: NoiseMode | None = None,
    ) -> Tensor:
        """Style mixing: images (B, C, H, W) with the ws before ``crossover`` (coarse styles) from
        ``z1`` (B, latent_dim) and the rest (fine styles) from ``z2``; ``crossover = num_ws`` is ``z1`` alone."""
        if not 0 <= crossover <= self.num_ws:
            raise ValueError(f"crossover must lie in 0..{self.num_ws} (num_ws), got {crossover}")
        w1 = self.mapping(z1, y)[:, None, :].expand(-1, self.num_ws, -1)  # (B, num_ws, w_dim)
        cut = torch.full((z1.shape[0],), crossover, device=z1.device)  # (B,)
        ws = self._mix_ws(w1, self.mapping(z2, y), cut)
        return self.synthesis(self.truncate(ws, truncation_psi), noise_mode)

    def _mix_ws(self, ws: Tensor, w2: Tensor, crossover: Tensor) -> Tensor:
        """Replace ``ws`` (B, num_ws, w_dim) from index ``crossover`` (B,) on by ``w2`` (B, w_dim)."""
        late = torch.arange(self.num_ws, device=ws.device)[None, :] >= crossover[:, None]  # (B, num_ws)
        return torch.where(late[:, :, None], w2[:, None, :], ws)  # (B, num_ws, w_dim)

    def _noise_mode(self, noise_mode: NoiseMode | None) -> NoiseMode:
        if noise_mode is None:
            return "random" if self.training else "const"
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r} is not supported; use one of {NOISE_MODES} or None")
        return noise_mode


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2 residual discriminator (https://arxiv.org/abs/1912.04958, fig. 7c): image (B, C, H, W)
    -> raw logits (B,).

    FromRGB (1x1 conv) at full resolution, :class:`DiscriminatorBlock` s down to the base resolution
    (4..7), :class:`MinibatchStdDev`, a 3x3 conv, flatten, an EqualizedLinear to the base width, and the
    :class:`~genlit.nets.dcgan.ProjectionHead` of the DCGAN nets (``linear(h) + <embed(y), h>`` with
    ``num_classes > 0``). Channels mirror the generator's ``channels`` / ``max_channels`` rule.

    Progressive growing (``growth``, :class:`~genlit.nets.progressive.ProgressiveGrowth`, the generator's
    schedule): the input is average-pooled to the current resolution ``r`` and enters through that
    resolution's own FromRGB, skipping the blocks above ``r`` (one FromRGB per resolution from the start one
    up, all built at construction). While ``r`` fades in with weight ``alpha``, the features after its block
    are ``alpha * block_r(fromRGB_r(x_r)) + (1 - alpha) * fromRGB_{r/2}(avg_pool(x_r))`` (ProGAN, fig. 2).
    None: no growing, the net of StyleGAN2 (one FromRGB at full resolution).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        channels: int = 32,
        max_channels: int = 128,
        mbstd_group_size: int = 4,
        mbstd_channels: int = 1,
        growth: ProgressiveGrowth | None = None,
    ):
        super().__init__()
        image_channels, size, base = check_stylegan_shape(data_shape, "StyleGANDiscriminator")
        widths = [c for _, c in reversed(_widths(size, base, channels, max_channels))]  # full res -> base
        if widths[-1] % mbstd_channels:
            raise ValueError(f"mbstd_channels ({mbstd_channels}) must divide the base width {widths[-1]}")
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        self.from_rgb = EqualizedConv2d(image_channels, widths[0], 1)
        self.blocks = nn.Sequential(*(DiscriminatorBlock(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_channels)
        self.conv = EqualizedConv2d(widths[-1] + mbstd_channels, widths[-1], 3)
        self.fc = EqualizedLinear(widths[-1] * base**2, widths[-1])
        self.head = ProjectionHead(widths[-1], num_classes)
        self.growth = growth
        ladder = [r for r, _ in _widths(size, base, channels, max_channels)]
        self.growth_clock = growth_clock(growth, ladder, "StyleGANDiscriminator")
        if self.growth_clock is not None:  # FromRGBs of the resolutions from the start one up to (without) the top
            below = widths[::-1][self.growth_clock.start : -1]
            self.lower_from_rgbs = nn.ModuleList(EqualizedConv2d(image_channels, c, 1) for c in below)

    def advance_growth(self, images: int) -> None:
        """Count ``images`` more real images seen (progressive growing; nothing without ``growth``)."""
        if self.growth_clock is not None:
            self.growth_clock.advance(images)

    def growth_state(self) -> tuple[int, float]:
        """``(resolution, alpha)`` the discriminator judges at now (without ``growth``: full size, 1.0)."""
        return growth_state(self.growth_clock, self.data_shape[-1])

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Score images ``x`` (B, C, H, W) with labels ``y`` (B,); returns raw logits (B,)."""
        check_labels("StyleGANDiscriminator", self.num_classes, y, x.shape[0])
        if self.growth_clock is None:
            h = self.blocks(lrelu(self.from_rgb(x)))  # (B, ch, base, base)
        else:
            h = self._grown_features(x)  # (B, ch, base, base)
        h = lrelu(self.conv(self.mbstd(h)))  # (B, ch, base, base)
        h = lrelu(self.fc(h.flatten(1)))  # (B, ch)
        return self.head(h, y)  # (B,)

    def _grown_features(self, x: Tensor) -> Tensor:
        """Features (B, ch, base, base) of full-resolution ``x`` (B, C, H, W) at the current level of growth."""
        clock = self.growth_clock
        level, alpha = clock.level()
        first = clock.top - level  # index of the block that takes this level's resolution
        x = to_resolution(x, clock.resolutions[level])  # (B, C, r, r)
        h = lrelu(self._from_rgb_at(level)(x))  # (B, ch_r, r, r)
        if alpha < 1.0:  # fade-in: blend with the previous level's path on the pooled image
            old = lrelu(self._from_rgb_at(level - 1)(F.avg_pool2d(x, 2)))  # (B, ch_r/2, r/2, r/2)
            h = alpha * self.blocks[first](h) + (1 - alpha) * old  # (B, ch_r/2, r/2, r/2)
            first += 1
        return self.blocks[first:](h)  # (B, ch, base, base)

    def _from_rgb_at(self, level: int) -> nn.Module:
        """The FromRGB of ladder level ``level`` (the top one is ``from_rgb``)."""
        clock = self.growth_clock
        return self.from_rgb if level == clock.top else self.lower_from_rgbs[level - clock.start]
