"""The first-stage autoencoder of latent diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752).

:class:`KLAutoencoderNet` maps an image (C, H, W) in [-1, 1] to the parameters of a diagonal Gaussian over a
latent grid (latent_channels, H / f, W / f), f = 2 ** (len(channel_mults) - 1), and a latent grid back to an
image. Both halves are the paper's convolutional ResNet stacks (GroupNorm, SiLU, two 3x3 convolutions per block,
strided-convolution downsampling, nearest-neighbour upsampling) without the attention of the large models. The
discriminator of the adversarial term is :class:`genlit.nets.cyclegan.PatchDiscriminator`.
"""

from __future__ import annotations

from torch import Tensor, nn

LOGVAR_RANGE = (-30.0, 20.0)  # the paper's clamp of the encoder's log-variances


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus a (1x1-projected) skip connection."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class KLAutoencoderNet(nn.Module):
    """Encoder to a diagonal Gaussian latent grid and decoder back (module docstring).

    Args:
        data_shape: (C, H, W) of the images; H and W divisible by 2 ** (len(channel_mults) - 1).
        latent_channels: channels of the latent grid.
        width: channels of the first level; level i has ``width * channel_mults[i]``.
        channel_mults: one entry per resolution level; each level after the first halves the side.
        res_blocks: residual blocks per level (the decoder has as many).
        groups: GroupNorm groups (must divide every width).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_channels: int = 3,
        width: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        res_blocks: int = 1,
        groups: int = 8,
    ) -> None:
        super().__init__()
        shape, mults = tuple(data_shape), tuple(channel_mults)
        if len(shape) != 3:
            raise ValueError(f"KLAutoencoderNet needs an image data_shape (C, H, W), got {shape}")
        if latent_channels < 1 or width < 1 or res_blocks < 1 or not mults or min(mults) < 1:
            raise ValueError("KLAutoencoderNet needs latent_channels, width, res_blocks and channel_mults >= 1")
        factor = 2 ** (len(mults) - 1)
        c, h, w = shape
        if h % factor or w % factor:
            raise ValueError(f"KLAutoencoderNet: {h}x{w} images cannot be halved {len(mults) - 1} times by "
                             f"channel_mults {mults}; use fewer levels")  # fmt: skip
        widths = [width * m for m in mults]
        if any(ch % groups for ch in widths):
            raise ValueError(f"groups={groups} must divide every width {sorted(set(widths))}")
        self.data_shape = shape
        self.latent_shape = (latent_channels, h // factor, w // factor)
        self.downsampling = factor

        down: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1)]
        ch = widths[0]
        for i, out in enumerate(widths):
            for _ in range(res_blocks):
                down.append(ResBlock(ch, out, groups))
                ch = out
            if i < len(widths) - 1:
                down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        down += [ResBlock(ch, ch, groups), nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3,
                                                                                          padding=1)]  # fmt: skip
        self.encoder = nn.Sequential(*down)

        up: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1), ResBlock(ch, ch, groups)]
        for i, out in reversed(list(enumerate(widths))):
            for _ in range(res_blocks):
                up.append(ResBlock(ch, out, groups))
                ch = out
            if i > 0:
                up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
        up += [nn.GroupNorm(groups, ch), nn.SiLU()]
        self.decoder = nn.Sequential(*up)
        self.out_conv = nn.Conv2d(ch, c, 3, padding=1)  # the decoder's last layer (the adaptive GAN weight's)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) -> the posterior's mean and log-variance, each (B, *latent_shape)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: Tensor) -> Tensor:
        """Latents (B, *latent_shape) -> images (B, C, H, W), unclamped (the reconstruction loss sees them raw)."""
        return self.out_conv(self.decoder(z))
