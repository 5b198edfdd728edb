"""Progressive growing of GANs (Karras et al. 2018, https://arxiv.org/abs/1710.10196): the schedule and the
image counter that the growing nets of :mod:`genlit.nets.stylegan` share.

A growing net trains at a low resolution first and adds one resolution of its ladder (``base * 2**k``: 7, 14,
28 for 28 px) at a time. Each new resolution is faded in (sec. 2, fig. 2): for ``fade_images`` real images its
weight ``alpha`` rises linearly from 0 to 1, then the nets train ``stable_images`` images at it unchanged. The
position on the schedule is a function of one number, the real images the discriminator has seen, which each
net keeps as an integer buffer (:class:`GrowthClock`): checkpoints, resumes and the EMA copy of the generator
carry it, and the nets never change a parameter's shape while they grow (every layer exists from the start;
the layers above the current resolution are simply not run).

The nets always speak the data's full resolution: the generator's image at the current resolution is
upsampled (nearest) to it, and the discriminator average-pools its input down to the current resolution,
real and fake alike (``avg_pool(nearest_up(x)) == x`` exactly, so a fake image reaches D unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProgressiveGrowth:
    """When a growing net adds its resolutions: the schedule of progressive growing (ProGAN, sec. 2 and A.1).

    With ``n`` the real images the discriminator has seen (this batch's included), ``S = stable_images`` and
    ``F = fade_images``:

    - ``n < S``: the start resolution, ``alpha = 1``;
    - then periods of ``F + S`` images, the ``k``-th (from 0) growing to the ``k + 1``-th resolution above the
      start: its first ``F`` images fade it in with ``alpha = (n - S - k (F + S)) / F`` (0 at the period's
      start, so the net's function is continuous), its last ``S`` images train it with ``alpha = 1``;
    - past the top of the ladder: the full resolution, ``alpha = 1``, for good.

    So the full resolution is faded in after ``m (F + S)`` images for ``m`` steps up the ladder
    (7 -> 14 -> 28: ``m = 2``). ProGAN used 600k + 600k images per resolution; the
    defaults (60k + 60k, one MNIST epoch each) suit MNIST-sized data. ``F = 0`` grows without fading;
    ``F = S = 0`` starts at the full resolution.

    Args:
        start_resolution: the resolution to start at, one of the net's ladder (28 px: 7, 14 or 28); None: the
            lowest.
        fade_images: real images over which each new resolution fades in (>= 0).
        stable_images: real images trained at each resolution once it is faded in, and at the start (>= 0).
    """

    def __init__(self, start_resolution: int | None = None, fade_images: int = 60_000, stable_images: int = 60_000):
        if fade_images < 0 or stable_images < 0:
            raise ValueError(
                f"ProgressiveGrowth needs fade_images and stable_images >= 0 (real images per phase), "
                f"got {fade_images} and {stable_images}"
            )
        if start_resolution is not None and start_resolution < 1:
            raise ValueError(f"ProgressiveGrowth's start_resolution must be positive or None, got {start_resolution}")
        self.start_resolution = start_resolution
        self.fade_images, self.stable_images = int(fade_images), int(stable_images)

    def start_level(self, resolutions: Sequence[int], owner: str) -> int:
        """Index of the start resolution in ``resolutions`` (the net's ladder, lowest first); one clear
        ValueError when it is not on the ladder."""
        if self.start_resolution is None:
            return 0
        if self.start_resolution not in resolutions:
            ladder = ", ".join(str(r) for r in resolutions)
            raise ValueError(
                f"ProgressiveGrowth's start_resolution {self.start_resolution} is not a resolution of {owner} for "
                f"{resolutions[-1]} px images; use one of {ladder} (or None: {resolutions[0]})"
            )
        return list(resolutions).index(self.start_resolution)

    def level(self, images: int, start: int, top: int) -> tuple[int, float]:
        """``(level, alpha)`` after ``images`` real images on a ladder whose start and top levels are ``start``
        and ``top``: the level (index on the ladder) to run and the weight of its newest resolution."""
        fade, stable = self.fade_images, self.stable_images
        if images < stable:
            return start, 1.0
        if fade + stable == 0:
            return top, 1.0
        grown, into = divmod(images - stable, fade + stable)
        level = start + 1 + grown
        if level > top:
            return top, 1.0
        return level, (into / fade if into < fade else 1.0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProgressiveGrowth) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(tuple(vars(self).values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"ProgressiveGrowth({args})"


class GrowthClock(nn.Module):
    """The real images a growing net has seen (an integer buffer ``images``) and, from it and the
    :class:`ProgressiveGrowth` schedule, the net's level on its ladder of ``resolutions`` (lowest first).

    A buffer, not a parameter: Lightning checkpoints it, ``load_state_dict`` restores it, the GAN family's EMA
    copy of the generator copies it with the other integer buffers, and it follows the net across devices.
    Reading it (:meth:`level`) is one host sync on a GPU.
    """

    def __init__(self, growth: ProgressiveGrowth, resolutions: Sequence[int], owner: str):
        super().__init__()
        self.growth, self.resolutions = growth, tuple(resolutions)
        self.start, self.top = growth.start_level(self.resolutions, owner), len(self.resolutions) - 1
        self.register_buffer("images", torch.zeros((), dtype=torch.long))

    def advance(self, images: int) -> None:
        """Count ``images`` more real images (the GAN family calls this at the start of each batch)."""
        if images < 0:
            raise ValueError(f"advance_growth takes a number of images >= 0, got {images}")
        self.images += images

    def level(self) -> tuple[int, float]:
        """``(level, alpha)``: the index of the current resolution and the weight of its fade-in."""
        return self.growth.level(int(self.images), self.start, self.top)

    def state(self) -> tuple[int, float]:
        """``(resolution, alpha)``: the current resolution in pixels and its fade-in weight (1: faded in)."""
        level, alpha = self.level()
        return self.resolutions[level], alpha


def growth_clock(growth: ProgressiveGrowth | None, resolutions: Sequence[int], owner: str) -> GrowthClock | None:
    """The clock of a net with the schedule ``growth`` on its ladder ``resolutions``; None without growing."""
    return None if growth is None else GrowthClock(growth, resolutions, owner)


def growth_state(clock: GrowthClock | None, size: int) -> tuple[int, float]:
    """``(resolution, alpha)`` of a net with ``clock`` (None: not growing, so ``(size, 1.0)``)."""
    return (size, 1.0) if clock is None else clock.state()


def to_full_resolution(image: Tensor, size: int) -> Tensor:
    """Nearest-neighbour upsampling of ``image`` (B, C, r, r) to (B, C, size, size), ``size = r * 2**k``."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, scale_factor=size // image.shape[-1], mode="nearest")  # (B, C, size, size)


def fade_in(new: Tensor, old: Tensor, alpha: float) -> Tensor:
    """ProGAN's fade-in (fig. 2): ``alpha * new + (1 - alpha) * nearest_upsample(old)`` for the new resolution's
    ``new`` (B, C, 2r, 2r) and the previous one's ``old`` (B, C, r, r)."""
    return alpha * new + (1 - alpha) * to_full_resolution(old, new.shape[-1])  # (B, C, 2r, 2r)


def to_resolution(image: Tensor, resolution: int) -> Tensor:
    """Average pooling of ``image`` (B, C, H, H) down to (B, C, resolution, resolution), ``H = resolution * 2**k``."""
    if image.shape[-1] == resolution:
        return image
    return F.avg_pool2d(image, image.shape[-1] // resolution)  # (B, C, resolution, resolution)
