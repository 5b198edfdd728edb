"""The layers of the StyleGAN-style nets (:mod:`genlit.nets.stylegan`): equalized learning rate, the mapping
network, modulated convolutions with noise inputs, minibatch standard deviation and the residual
discriminator block (Karras et al. 2018, https://arxiv.org/abs/1710.10196; 2019,
https://arxiv.org/abs/1812.04948; 2020, https://arxiv.org/abs/1912.04958).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlit.nets.dcgan import check_labels

NoiseMode = Literal["random", "const", "none"]
NOISE_MODES = ("random", "const", "none")
_SQRT2 = math.sqrt(2.0)


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.2) scaled by sqrt(2) (StyleGAN's gain, keeps the second moment near 1)."""
    return F.leaky_relu(x, 0.2) * _SQRT2


def upsample(x: Tensor) -> Tensor:
    """2x bilinear upsampling: zero insertion followed by the [1, 3, 3, 1] / 4 filter of StyleGAN2."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # (B, C, 2H, 2W)


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale every row of ``x`` (B, D) to unit mean square (StyleGAN's PixelNorm on latents)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)  # (B, D)


class EqualizedLinear(nn.Module):
    """Linear layer with equalized learning rate (ProGAN, https://arxiv.org/abs/1710.10196, sec. 4.1): weight
    ~ N(0, 1) / lr_mul used times ``lr_mul / sqrt(in_features)``, bias used times ``lr_mul``; ``lr_mul`` scales
    the effective learning rate, not the initial function (StyleGAN's mapping network uses 0.01)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, in_features) to (B, out_features)."""
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.weight_gain, bias)  # (B, out_features)


class EqualizedConv2d(nn.Module):
    """Stride-1 'same' convolution with equalized learning rate (weight ~ N(0, 1) times 1/sqrt(fan_in))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, in, H, W) to (B, out, H, W)."""
        pad = self.weight.shape[-1] // 2
        return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=pad)  # (B, out, H, W)


class MappingNetwork(nn.Module):
    """StyleGAN's mapping network f: z (B, latent_dim) [+ label y (B,)] -> w (B, w_dim).

    ``z`` is normalised to unit second moment, a class embedding (``w_dim``, normalised) is concatenated
    when ``num_classes > 0`` (StyleGAN2-ADA), then ``num_layers`` EqualizedLinear layers with ``lr_mul``
    (0.01 in StyleGAN, appendix C), each followed by LeakyReLU(0.2) * sqrt(2)."""

    def __init__(self, latent_dim: int, w_dim: int, num_classes: int = 0, num_layers: int = 8, lr_mul: float = 0.01):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping_layers must be at least 1, got {num_layers}")
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, w_dim) if num_classes > 0 else None
        dims = [latent_dim + (w_dim if num_classes > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualizedLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Map latents ``z`` (B, latent_dim) and labels ``y`` (B,) to styles w (B, w_dim)."""
        h = normalize_2nd_moment(z)  # (B, Z)
        if self.embed is not None:
            check_labels("StyleGANGenerator", self.num_classes, y, z.shape[0])
            h = torch.cat([h, normalize_2nd_moment(self.embed(y))], dim=1)  # (B, Z + w_dim)
        for layer in self.layers:
            h = lrelu(layer(h))  # (B, w_dim)
        return h


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (https://arxiv.org/abs/1912.04958, sec. 2.2, eq. 1-3).

    A per-sample style ``s = affine(w)`` (bias initialised to 1) scales the input channels of the
    equalized weight; with ``demodulate`` every output channel's weight is divided by its L2 norm,
    so unit-variance i.i.d. inputs give unit-variance outputs. ``up=True`` upsamples the input 2x
    bilinearly, then convolves (upsample-then-conv rather than StyleGAN2's transposed conv; bilinear 2x is
    the [1, 3, 3, 1] filter).
    ``bias=True`` adds a learned bias (init 0); there is no activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        demodulate: bool = True,
        up: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.up = up
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def modulated_weight(self, w: Tensor) -> Tensor:
        """The per-sample weights (B, out, in, k, k) for styles from ``w`` (B, w_dim)."""
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain * styles[:, None, :, None, None]  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """Convolve ``x`` (B, in, H, W) with the weights modulated by ``w`` (B, w_dim); (B, out, H', W').

        Computed as StyleGAN2 trains (its ``fused_modconv=False``): scale the input channels by the styles,
        one ordinary convolution with the shared weight, scale the output channels by the demodulation
        coefficients; the same numbers as the per-sample weights of :meth:`modulated_weight`, and several
        times faster than a grouped convolution on a CPU.
        """
        if self.up:
            x = upsample(x)  # (B, in, 2H, 2W)
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain  # (out, in, k, k)
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)  # (B, out, H', W')
        if self.demodulate:  # 1 / ||weight * style||_2 per sample and output channel
            demod = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8)  # (B, out)
            out = out * demod[:, :, None, None]
        return out if self.bias is None else out + self.bias[None, :, None, None]


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise times one learned strength, initialised to 0 (StyleGAN2, sec. 2.1).

    ``"random"`` draws fresh noise (B, 1, H, W) per call, ``"const"`` adds the fixed buffer
    ``noise_const`` (1, 1, H, W) drawn at construction, ``"none"`` adds nothing.
    """

    def __init__(self, resolution: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor, noise_mode: NoiseMode) -> Tensor:
        """Add noise to ``x`` (B, C, H, W) according to ``noise_mode``."""
        if noise_mode == "none":
            return x
        shape = (x.shape[0], 1, x.shape[2], x.shape[3])
        noise = torch.randn(shape, device=x.device, dtype=x.dtype) if noise_mode == "random" else self.noise_const
        return x + noise.to(x.dtype) * self.strength  # (B, C, H, W)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv with bias, noise, LeakyReLU(0.2) * sqrt(2): one layer of the synthesis network."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up, bias=True)
        self.noise = NoiseInjection(resolution)

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode) -> Tensor:
        """Map ``x`` (B, in, H, W) and ``w`` (B, w_dim) to (B, out, H', W')."""
        return lrelu(self.noise(self.conv(x, w), noise_mode))  # (B, out, H', W')


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (ProGAN, https://arxiv.org/abs/1710.10196, sec. 3; StyleGAN2 form).

    The batch is split into groups of ``group_size`` samples (group of sample i: the samples with the
    same ``i % (B // g)``); the std over each group, averaged over the features of each of the
    ``num_channels`` channel slices and over pixels, is appended as ``num_channels`` constant maps.
    When ``B`` is not divisible by ``group_size``, ``g`` is the largest divisor of ``B`` not above it.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        if group_size < 1 or num_channels < 1:
            raise ValueError(f"mbstd_group_size and mbstd_channels must be >= 1, got {group_size}, {num_channels}")
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        """Append the statistics to ``x`` (B, C, H, W); returns (B, C + num_channels, H, W)."""
        b, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, b) + 1) if b % d == 0)
        f = self.num_channels
        s = x.reshape(g, b // g, f, c // f, h, w)  # (g, B/g, F, C/F, H, W)
        s = (s - s.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (B/g, F, C/F, H, W)
        s = s.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # (B, F, H, W)
        return torch.cat([x, s.to(x.dtype)], dim=1)  # (B, C + F, H, W)


class DiscriminatorBlock(nn.Module):
    """StyleGAN2 residual block (fig. 7c): two 3x3 convs then 2x2 average pooling, plus a pooled 1x1
    skip without bias; the sum is scaled by 1/sqrt(2). (Conv-then-average-pool, as in ProGAN, stands in
    for StyleGAN2's blur-then-strided conv.)"""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, in, H, W) to (B, out, H/2, W/2)."""
        skip = self.skip(F.avg_pool2d(x, 2))  # (B, out, H/2, W/2)
        h = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)  # (B, out, H/2, W/2)
        return (skip + h) / _SQRT2
