"""Image domains built in code from another dataset's images, for unpaired translation without a download.

A :class:`DomainRenderer` turns a domain's source images (decoded uint8) into the domain's images; the
:class:`~genlit.data.unpaired.UnpairedImageDataModule` applies it once in ``setup`` (``render_a`` / ``render_b``).
Each image's look depends only on the renderer's seed, the split and the image's row in its source dataset, never
on which other rows are rendered with it: the same row gets the same picture in every run, on every rank.

:class:`ColouredDigits` renders grey digits (MNIST) as coloured strokes on procedural coloured, textured
backgrounds, in pure torch: with MNIST's other half as domain A this gives two domains of the same digits that
share no image, so no (a, b) pair exists and a translation between them must be learnt unpaired. The digit labels
stay with the images for evaluation (does translating keep the digit?); training never reads them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlit.seeding import SampleRNG, stream_seed

_SPLIT_STREAMS = {"train": 0, "validation": 1, "valid": 1, "val": 1, "test": 2}  # a split's own random streams
_NOISE_GRID = 4  # the low-frequency colour noise is bilinearly upsampled from a 4x4 grid


class DomainRenderer:
    """Base of the renderers: ``renderer(images, rows, split)`` -> the domain's uint8 images.

    Subclasses set ``in_channels`` (the channels of the source images they read: the DataModule decodes the
    domain's source to these) and ``channels`` (of the images they make), and implement :meth:`render`.
    """

    in_channels: int = 1
    channels: int = 3

    def __call__(self, images: Tensor, rows: Tensor, split: str) -> Tensor:
        """uint8 source images (N, in_channels, H, W) of rows ``rows`` (N,) of ``split`` -> uint8 (N, channels,
        H, W); one clear error for images of other channels."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} renders uint8 images (N, {self.in_channels}, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if rows.shape != (images.shape[0],):
            raise ValueError(f"{type(self).__name__} needs one source row per image, got {tuple(rows.shape)} rows")
        return self.render(images, rows, split)

    def render(self, images: Tensor, rows: Tensor, split: str) -> Tensor:
        """Make the domain's images (subclasses; the arguments are checked by ``__call__``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement render()")

    def split_seed(self, seed: int, split: str) -> int:
        """The seed of ``split``'s per-row streams under ``seed`` (train, validation and test draw apart)."""
        return stream_seed(seed, _SPLIT_STREAMS.get(split, 3 + sum(map(ord, split))))


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Colours (..., 3) of hue, saturation, value in [0, 1] -> RGB (..., 3) in [0, 1]."""
    h, s, v = hsv.unbind(-1)  # each (...)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=-1)  # (..., 3)
    return v[..., None] - (v * s)[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))  # (..., 3)


class ColouredDigits(DomainRenderer):
    """Grey digits -> coloured strokes on coloured, textured backgrounds (module docstring).

    Each image draws its own palette and texture: a background blending two colours through oriented stripes and
    low-frequency noise, and a stroke colour that shades along the digit. Half of the images (``light_share``) are
    light backgrounds with dark strokes, the others dark backgrounds with bright strokes, so a translation to grey
    digits must also learn when to invert.

    Args:
        seed: seed of every image's random streams (with the split and the image's source row).
        light_share: share of images drawn as dark strokes on a light background.
        texture: strength of the stripes and noise in [0, 1] (0: a flat two-colour background).
    """

    in_channels, channels = 1, 3

    def __init__(self, seed: int = 0, light_share: float = 0.5, texture: float = 0.6) -> None:
        if seed < 0 or not 0.0 <= light_share <= 1.0 or not 0.0 <= texture <= 1.0:
            raise ValueError(f"ColouredDigits needs seed >= 0 and light_share, texture in [0, 1]; got {seed}, "
                             f"{light_share}, {texture}")  # fmt: skip
        self.seed, self.light_share, self.texture = seed, light_share, texture

    def render(self, images: Tensor, rows: Tensor, split: str) -> Tensor:
        """Colour ``images`` (N, 1, H, W) uint8; row i's look depends on (seed, split, rows[i]) only."""
        n, _, h, w = images.shape
        u = SampleRNG(rows, self.split_seed(self.seed, split)).rand(16 + _NOISE_GRID**2)  # (N, K) uniforms
        light = u[:, 0] < self.light_share  # (N,)
        background = self._background(u, light, h, w)  # (N, 3, H, W)
        stroke = self._stroke(u, light, h)  # (N, 3, H, 1)
        alpha = images.float() / 255.0  # (N, 1, H, W)
        out = background * (1 - alpha) + stroke * alpha  # (N, 3, H, W)
        return (out.clamp(0, 1) * 255).round().to(torch.uint8)

    def _background(self, u: Tensor, light: Tensor, h: int, w: int) -> Tensor:
        """Two colours of one hue family blended by oriented stripes and noise (N, 3, H, W) in [0, 1]."""
        n = u.shape[0]
        hue = u[:, 1:2] + torch.stack([torch.zeros(n), 0.08 + 0.25 * u[:, 2]], dim=1)  # (N, 2)
        value = torch.where(light[:, None], 0.75 + 0.25 * u[:, 3:5], 0.1 + 0.3 * u[:, 3:5])  # (N, 2)
        saturation = 0.35 + 0.6 * u[:, 5:7]  # (N, 2)
        colours = hsv_to_rgb(torch.stack([hue % 1.0, saturation, value], dim=-1))  # (N, 2, 3)
        ys = torch.linspace(0, 1, h)[:, None]  # (H, 1)
        xs = torch.linspace(0, 1, w)[None, :]  # (1, W)
        angle, freq, phase = math.pi * u[:, 7], 1.5 + 4.5 * u[:, 8], 2 * math.pi * u[:, 9]  # each (N,)
        along = xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]  # (N, H, W)
        stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * freq[:, None, None] * along + phase[:, None, None])  # (N, H, W)
        grid = u[:, 16:].view(n, 1, _NOISE_GRID, _NOISE_GRID)  # (N, 1, 4, 4)
        noise = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)[:, 0]  # (N, H, W)
        mix = (1 - self.texture) * 0.5 + self.texture * (0.55 * stripes + 0.45 * noise)  # (N, H, W)
        first, second = colours[:, 0, :, None, None], colours[:, 1, :, None, None]  # each (N, 3, 1, 1)
        return first * (1 - mix[:, None]) + second * mix[:, None]  # (N, 3, H, W)

    def _stroke(self, u: Tensor, light: Tensor, h: int) -> Tensor:
        """A stroke colour shading from top to bottom (N, 3, H, 1), far in brightness from the background."""
        hue = torch.stack([u[:, 10], u[:, 10] + 0.1 + 0.2 * u[:, 11]], dim=1) % 1.0  # (N, 2): top and bottom
        value = torch.where(light[:, None], 0.05 + 0.25 * u[:, 12:14], 0.85 + 0.15 * u[:, 12:14])  # (N, 2)
        saturation = 0.6 + 0.4 * u[:, 14:16]  # (N, 2)
        ends = hsv_to_rgb(torch.stack([hue, saturation, value], dim=-1))  # (N, 2, 3)
        t = torch.linspace(0, 1, h)[None, :, None]  # (1, H, 1)
        shade = ends[:, 0, None, :] * (1 - t) + ends[:, 1, None, :] * t  # (N, H, 3)
        return shade.permute(0, 2, 1)[..., None]  # (N, 3, H, 1)
