"""Picture making: the one home for turning samples into images and PNG files.

Used by the ``genlit sample`` command and by the callbacks (sample grids), so every caller draws the same
picture. Drawing is done with numpy and Pillow only (no matplotlib / torchvision).

Conventions:

- Model images are float in [-1, 1], shape (B, C, H, W). :func:`to_uint8` maps them to uint8 (B, H, W, C),
  the layout of the ``arr_0`` array in guided-diffusion's evaluation ``.npz`` files
  (https://github.com/openai/guided-diffusion/tree/main/evaluations).
- Pictures are numpy uint8 arrays (H, W, C) with C in {1, 3, 4}.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlit.files import atomic_write

_POINT_COLOR = (31, 119, 180)  # blue
_CENTER_COLOR = (214, 39, 40)  # red
_AXIS_COLOR = (210, 210, 210)  # light grey


def to_uint8(x: Tensor) -> Tensor:
    """Map float images in [-1, 1] (B, C, H, W) to uint8 (B, H, W, C) on the CPU.

    Values are clamped to [-1, 1], scaled by 127.5 and rounded to the nearest integer (ties to even), so
    -1 -> 0, 0 -> 128 and 1 -> 255.
    """
    if x.ndim != 4:
        raise ValueError(f"to_uint8 expects images of shape (B, C, H, W); got shape {tuple(x.shape)}")
    x = x.detach().float().clamp(-1.0, 1.0)  # (B, C, H, W)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8)  # (B, C, H, W) in 0..255
    return x.permute(0, 2, 3, 1).contiguous().cpu()  # (B, H, W, C)


def _as_uint8_array(images: np.ndarray | Tensor) -> np.ndarray:
    """Return ``images`` as a numpy uint8 array, refusing other dtypes (scale with :func:`to_uint8` first)."""
    array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got dtype {array.dtype}; scale floats with to_uint8")
    return array


def image_grid(
    images: np.ndarray | Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile uint8 images (B, H, W, C) into one picture (H', W', C).

    ``nrow`` is the number of images per row (as in torchvision's ``make_grid``); by default
    ``ceil(sqrt(B))``, which makes a square-ish grid. ``padding`` pixels of ``pad_value`` separate the
    images and surround the grid, so the picture is ``rows * (H + padding) + padding`` high and
    ``nrow * (W + padding) + padding`` wide.
    """
    array = _as_uint8_array(images)
    if array.ndim != 4 or array.shape[0] == 0:
        raise ValueError(f"image_grid expects a non-empty batch (B, H, W, C); got shape {array.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    num, height, width, channels = array.shape
    ncol = min(nrow if nrow is not None else math.ceil(math.sqrt(num)), num)
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1; got {nrow}")
    nrows = math.ceil(num / ncol)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((nrows * cell_h + padding, ncol * cell_w + padding, channels), pad_value, np.uint8)
    for index in range(num):
        top = (index // ncol) * cell_h + padding
        left = (index % ncol) * cell_w + padding
        grid[top : top + height, left : left + width] = array[index]  # (H, W, C)
    return grid


def _as_points(points: np.ndarray | Tensor | None) -> np.ndarray:
    """Return (N, 2) float64 points with non-finite rows removed; ``None`` gives an empty (0, 2) array."""
    if points is None:
        return np.zeros((0, 2))
    array = points.detach().double().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected 2-D points of shape (N, 2); got shape {array.shape}")
    return array[np.isfinite(array).all(axis=1)]  # (N, 2)


def _stamp(canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int, color: tuple) -> None:
    """Paint a (2 * radius + 1)-pixel square of ``color`` at each (row, col), clipped to the canvas."""
    size = canvas.shape[0]
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            canvas[r[inside], c[inside]] = color


def scatter_image(
    points: np.ndarray | Tensor,
    centers: np.ndarray | Tensor | None = None,
    size: int = 512,
    extent: float | None = None,
) -> np.ndarray:
    """Render a 2-D point cloud (N, 2) as an RGB picture (size, size, 3) on a white background.

    The view is the square [-extent, extent]^2 with y pointing up; by default ``extent`` is 10 % more than
    the largest absolute coordinate of the points and centres. Points are small blue dots, optional
    ``centers`` (K, 2) (e.g. the modes of a toy mixture) larger red squares, and the axes through 0 are
    light grey. Points outside the view are left out.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels; got {size}")
    pts, ctr = _as_points(points), _as_points(centers)
    if extent is None:
        both = np.concatenate([pts, ctr])  # (N + K, 2)
        extent = 1.1 * float(np.abs(both).max()) if both.size else 1.0
        extent = extent if extent > 0 else 1.0
    if not extent > 0:
        raise ValueError(f"extent must be > 0; got {extent}")
    canvas = np.full((size, size, 3), 255, np.uint8)

    def to_pixels(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols = np.round((xy[:, 0] + extent) / (2 * extent) * (size - 1)).astype(np.int64)
        rows = np.round((extent - xy[:, 1]) / (2 * extent) * (size - 1)).astype(np.int64)
        return rows, cols

    zero_row, zero_col = to_pixels(np.zeros((1, 2)))
    canvas[zero_row[0], :] = _AXIS_COLOR
    canvas[:, zero_col[0]] = _AXIS_COLOR
    visible = pts[(np.abs(pts) <= extent).all(axis=1)]  # (N', 2)
    radius = max(1, size // 256)
    _stamp(canvas, *to_pixels(visible), radius=radius, color=_POINT_COLOR)
    _stamp(canvas, *to_pixels(ctr), radius=3 * radius, color=_CENTER_COLOR)
    return canvas


def samples_picture(samples: Tensor, nrow: int | None = None, centers: np.ndarray | Tensor | None = None) -> np.ndarray:
    """Draw model samples: images (B, C, H, W) in [-1, 1] become a grid, flat 2-D points (B, 2) a scatter.

    One function so that every caller (sample command, callbacks) makes the same picture; ``centers`` is
    only used for the scatter.
    """
    if samples.ndim == 4:
        return image_grid(to_uint8(samples), nrow=nrow)
    if samples.ndim == 2 and samples.shape[1] == 2:
        return scatter_image(samples, centers=centers)
    raise ValueError(
        f"cannot draw samples of shape {tuple(samples.shape)}; use images (B, C, H, W) or 2-D points (B, 2)"
    )


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 picture (H, W, C) with C in {1, 3, 4} (or (H, W)) to ``path`` as PNG; return the path.

    Parent folders are created and the write is atomic (:func:`genlit.files.atomic_write`): a reader never sees
    a half-written PNG. Grey pictures are saved as mode L.
    """
    array = _as_uint8_array(picture)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # (H, W)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"save_png expects a picture (H, W, C) with C in 1, 3, 4; got shape {picture.shape}")
    with atomic_write(path) as handle:
        Image.fromarray(array).save(handle, format="PNG")
    return Path(path)


def write_samples_npz(path: str | os.PathLike, samples: Tensor, labels: Tensor | None = None) -> Path:
    """Write samples as the guided-diffusion evaluation ``.npz``: ``arr_0`` uint8 (N, H, W, C) for images in
    [-1, 1] (float32 (N, D) for flat samples), ``arr_1`` int64 (N,) labels when given; atomically."""
    arrays = {"arr_0": to_uint8(samples).numpy() if samples.dim() == 4 else samples.float().numpy().astype(np.float32)}
    if labels is not None:
        arrays["arr_1"] = labels.cpu().numpy().astype(np.int64)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return Path(path)


def write_samples(path: str | os.PathLike, samples: Tensor, labels: Tensor | None = None) -> Path:
    """:func:`write_samples_npz`, and beside it the PNG that shows them (a grid of the first 64 images, or every
    2-D point); returns the PNG's path."""
    write_samples_npz(path, samples, labels)
    shown = samples[:64] if samples.dim() == 4 else samples
    return save_png(samples_picture(shown), Path(path).with_suffix(".png"))
