"""CycleGAN's networks (Zhu et al. 2017, https://arxiv.org/abs/1703.10593, appendix 7.2): a ResNet-block
generator and a PatchGAN discriminator, as plain modules.

- :class:`ResnetGenerator` ``(in_shape, out_shape)``: ``c7s1-w, d2w, d4w, R4w x num_blocks, u2w, uw, c7s1-C``
  (Johnson et al. 2016, https://arxiv.org/abs/1603.08155), reflection padding, instance norm, ``tanh`` output.
  ``num_downsamples`` strided convolutions (each doubling the width) and as many transposed ones; the input and
  output channels may differ (grey <-> colour), the image size may not (the generator translates pixels in place).
- :class:`PatchDiscriminator` ``(data_shape)``: the 70x70 PatchGAN of pix2pix (Isola et al. 2017,
  https://arxiv.org/abs/1611.07004) with ``num_layers`` strided 4x4 convolutions: its output (B, 1, h, w) judges
  overlapping patches, each real or fake (receptive field 16, 34, 70 px for 1, 2, 3 layers).

Weights start N(0, 0.02) (the official code's ``init_type=normal``); norms are ``instance`` (no running
statistics: the same in train and eval mode, and nothing to synchronise under DDP) or ``none``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

Norm = Literal["instance", "none"]
_NORMS = ("instance", "none")


def _check_norm(norm: str, owner: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"{owner} norm {norm!r} is not known; use one of {', '.join(_NORMS)}")


def _norm(norm: Norm, channels: int) -> nn.Module:
    """Instance norm with a learned affine transform (the official code's choice), or nothing."""
    return nn.InstanceNorm2d(channels, affine=True) if norm == "instance" else nn.Identity()


def _image_shape(shape: tuple[int, ...], owner: str, what: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image shape or one clear error."""
    shape = tuple(shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{owner} needs an image {what} (C, H, W), got {shape}")
    return shape


def normal_init_(module: nn.Module) -> None:
    """``net.apply`` rule: conv weights ~ N(0, 0.02), biases 0, norm gains ~ N(1, 0.02) (CycleGAN's init)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.InstanceNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ResnetBlock(nn.Module):
    """``x + conv-norm-relu-conv-norm(x)`` with reflection padding, the same width in and out."""

    def __init__(self, channels: int, norm: Norm = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator from domain ``in_shape`` to domain ``out_shape`` (module docstring).

    Args:
        in_shape: (C_in, H, W) of the images it reads.
        out_shape: (C_out, H, W) of the images it writes; same H and W as ``in_shape``.
        width: channels of the first convolution (the paper: 64); doubled at each downsampling.
        num_blocks: residual blocks at the lowest resolution (the paper: 6 for 128 px, 9 for 256 px).
        num_downsamples: strided convolutions down (and transposed ones up); H and W must divide by 2**this.
        norm: ``instance`` or ``none``.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        width: int = 32,
        num_blocks: int = 6,
        num_downsamples: int = 2,
        norm: Norm = "instance",
    ) -> None:
        super().__init__()
        c_in, h, w = _image_shape(in_shape, "ResnetGenerator", "in_shape")
        c_out, h_out, w_out = _image_shape(out_shape, "ResnetGenerator", "out_shape")
        _check_norm(norm, "ResnetGenerator")
        if (h, w) != (h_out, w_out):
            raise ValueError(f"ResnetGenerator translates at one size: in_shape {in_shape} and out_shape {out_shape}")
        if width < 1 or num_blocks < 0 or num_downsamples < 0:
            raise ValueError("ResnetGenerator needs width >= 1, num_blocks >= 0 and num_downsamples >= 0")
        if h % 2**num_downsamples or w % 2**num_downsamples:
            raise ValueError(
                f"ResnetGenerator: {h}x{w} images do not halve {num_downsamples} times; lower num_downsamples"
            )
        self.in_shape, self.out_shape = (c_in, h, w), (c_out, h, w)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c_in, width, 7), _norm(norm, width), nn.ReLU(True)]
        for i in range(num_downsamples):
            c = width * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(width * 2**num_downsamples, norm) for _ in range(num_blocks)]
        for i in reversed(range(num_downsamples)):
            c = width * 2**i
            up = nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1)
            layers += [up, _norm(norm, c), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, c_out, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(normal_init_)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) in [-1, 1] -> (B, C_out, H, W) in [-1, 1]."""
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (module docstring): raw scores (B, 1, h, w), one per overlapping patch.

    Args:
        data_shape: (C, H, W) of the images it judges.
        width: channels of the first convolution (the paper: 64), doubled per layer up to 8x.
        num_layers: strided 4x4 convolutions (3: the 70x70 PatchGAN; 1 or 2 for small images).
        norm: ``instance`` or ``none`` (never on the first layer, as in the paper).
    """

    def __init__(self, data_shape: tuple[int, ...], width: int = 32, num_layers: int = 3, norm: Norm = "instance"):
        super().__init__()
        c, h, w = _image_shape(data_shape, "PatchDiscriminator", "data_shape")
        _check_norm(norm, "PatchDiscriminator")
        if width < 1 or num_layers < 1:
            raise ValueError("PatchDiscriminator needs width >= 1 and num_layers >= 1")
        if min(h, w) // 2**num_layers < 3:  # the two stride-1 4x4 convolutions take 2 px off
            raise ValueError(f"PatchDiscriminator: {num_layers} strided layers leave no patch of {h}x{w} images; "
                             "lower num_layers")  # fmt: skip
        self.data_shape = (c, h, w)
        layers: list[nn.Module] = [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = width
        for i in range(1, num_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < num_layers else 1  # the last of them keeps the resolution (pix2pix's n_layers design)
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1), _norm(norm, out), nn.LeakyReLU(0.2, True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        self.apply(normal_init_)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> patch scores (B, 1, h, w)."""
        return self.net(x)
