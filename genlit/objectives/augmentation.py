"""Differentiable augmentations for everything a GAN discriminator sees, for training on small datasets.

Augment real *and* fake images the same way before the discriminator, in the discriminator step and in
the generator step alike: every op here is differentiable w.r.t. the images, so the generator's
gradient flows back through it. Images are (B, C, H, W) in [-1, 1]; 0 is mid-grey.

* :func:`diff_augment`: DiffAugment (Zhao et al. 2020, https://arxiv.org/abs/2006.10738), policies
  ``color``, ``translation`` and ``cutout`` applied to every sample, with the magnitudes of the
  authors' release (brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); shifts of
  up to 1/8 of the size with zero padding; a zeroed square of half the size).
* :func:`adaptive_augment`: the 'bgc' pipeline of ADA (Karras et al. 2020, "Training Generative
  Adversarial Networks with Limited Data", https://arxiv.org/abs/2006.06676, Appendix B): each op acts
  on each sample independently with probability ``p``.

The controller of ADA's ``p`` and the policies the GAN family takes are in
:mod:`genlit.objectives.discriminator_augment`.

Nothing here has trainable parameters. Randomness comes from ``generator`` when one is given (drawn on
its device, then moved to the images' device), else from the global RNG of the images' device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DiffAugmentPolicy = Literal["color", "translation", "cutout"]
AugmentOp = Literal[
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation",
]  # fmt: skip

DIFF_AUGMENT_POLICIES: tuple[DiffAugmentPolicy, ...] = ("color", "translation", "cutout")
_BLIT_OPS: tuple[AugmentOp, ...] = ("xflip", "rotate90", "xint")
_GEOMETRIC_OPS: tuple[AugmentOp, ...] = ("scale", "rotate", "aniso", "xfrac")
_COLOR_OPS: tuple[AugmentOp, ...] = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_OPS: tuple[AugmentOp, ...] = _BLIT_OPS + _GEOMETRIC_OPS + _COLOR_OPS
"""Every ADA op, in the order the pipeline applies them (the paper's 'bgc')."""


def _check_names(kind: str, names: Sequence[str], allowed: Sequence[str]) -> None:
    """One-line ValueError when ``names`` is a bare string or holds a name outside ``allowed``."""
    if isinstance(names, str):
        raise ValueError(f"{kind} must be a list of names, not the string {names!r}; use any of {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown {kind} {name!r}; use any of {', '.join(allowed)}")


def check_diffaugment_policy(policy: Sequence[str]) -> None:
    """Raise a ValueError naming the allowed DiffAugment policies when ``policy`` holds another name."""
    _check_names("DiffAugment policy", policy, DIFF_AUGMENT_POLICIES)


def check_augment_ops(names: Sequence[str]) -> None:
    """Raise a ValueError naming the allowed ADA ops when ``names`` holds another name."""
    _check_names("ADA augmentation op", names, ADA_OPS)


# ----------------------------------------------------------------------------- random draws


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U(0, 1) float32 draws of ``shape`` on ``device``, taken from ``generator`` when given."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """N(0, 1) float32 draws of ``shape`` on ``device``, taken from ``generator`` when given."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` integers (int64) uniform in [low, high) on ``device``, taken from ``generator`` when given."""
    source = generator.device if generator is not None else device
    return torch.randint(low, high, (n,), generator=generator, device=source).to(device)


def _gather(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``out[b, c, i, j] = images[b, c, rows[b, i], cols[b, j]]``; differentiable w.r.t. ``images``."""
    B, C, H, W = images.shape
    out = images.gather(2, rows[:, None, :, None].expand(B, C, H, W))  # (B, C, H, W)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))  # (B, C, H, W)


# ----------------------------------------------------------------------------- DiffAugment


def _diff_color(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-sample random brightness, saturation and contrast (saturation is exactly a no-op when C = 1)."""
    B = x.shape[0]
    draw = _uniform((3, B, 1, 1, 1), generator, x.device).to(x.dtype)  # (3, B, 1, 1, 1)
    x = x + (draw[0] - 0.5)  # brightness (B, C, H, W)
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - mean) * (draw[1] * 2.0) + mean  # saturation (B, C, H, W)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (draw[2] + 0.5) + mean  # contrast (B, C, H, W)


def _diff_translation(x: Tensor, generator: torch.Generator | None, ratio: float = 0.125) -> Tensor:
    """Shift each sample by a random integer offset of up to ``ratio`` of its size; zeros fill the gap."""
    B, _, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = _randint(-sy, sy + 1, B, generator, x.device)  # (B,)
    dx = _randint(-sx, sx + 1, B, generator, x.device)  # (B,)
    rows = torch.arange(H, device=x.device) - dy[:, None]  # (B, H) source rows
    cols = torch.arange(W, device=x.device) - dx[:, None]  # (B, W) source columns
    inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (B, H, W)
    out = _gather(x, rows.clamp(0, H - 1), cols.clamp(0, W - 1))  # (B, C, H, W)
    return out * inside[:, None].to(x.dtype)  # (B, C, H, W)


def _diff_cutout(x: Tensor, generator: torch.Generator | None, ratio: float = 0.5) -> Tensor:
    """Zero a random (ratio H) x (ratio W) rectangle per sample, centred anywhere in the image (may clip)."""
    B, _, H, W = x.shape
    size_h, size_w = int(H * ratio + 0.5), int(W * ratio + 0.5)
    top = _randint(0, H, B, generator, x.device)[:, None] - size_h // 2  # (B, 1)
    left = _randint(0, W, B, generator, x.device)[:, None] - size_w // 2  # (B, 1)
    rows = torch.arange(H, device=x.device)  # (H,)
    cols = torch.arange(W, device=x.device)  # (W,)
    in_rows = (rows >= top) & (rows < top + size_h)  # (B, H)
    in_cols = (cols >= left) & (cols < left + size_w)  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)  # (B, C, H, W)


_DIFF_OPS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": _diff_color,
    "translation": _diff_translation,
    "cutout": _diff_cutout,
}


def diff_augment(
    images: Tensor,
    policy: Sequence[DiffAugmentPolicy],
    generator: torch.Generator | None = None,
) -> Tensor:
    """DiffAugment (Zhao et al. 2020, https://arxiv.org/abs/2006.10738) of (B, C, H, W) images in [-1, 1].

    Applies the ``policy`` ops (any of ``color``, ``translation``, ``cutout``) in the given order to
    every sample, each with its own random draw; returns (B, C, H, W) of the input dtype. The output
    is differentiable w.r.t. ``images`` (affine in them for a fixed draw). ``color`` works for any C;
    its saturation step mixes each pixel with its channel mean, so it is exactly a no-op for grey
    (C = 1) images, which get random brightness and contrast only. An empty policy returns ``images``.
    """
    check_diffaugment_policy(policy)
    for name in policy:
        images = _DIFF_OPS[name](images, generator)  # (B, C, H, W)
    return images


# ----------------------------------------------------------------------------- ADA


def _coin(p: float, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n,) bools, each True with probability ``p``: whether an op acts on that sample."""
    return _uniform((n,), generator, device) < p


def _reflect(index: Tensor, n: int) -> Tensor:
    """Map integer indices into [0, n) by mirroring about the edge pixels (no edge repeat)."""
    period = max(2 * (n - 1), 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def _blit(x: Tensor, p: float, ops: Sequence[str], generator: torch.Generator | None) -> Tensor:
    """ADA pixel blitting: xflip, rotate90 (k x 90 deg, k in {1, 2, 3}), integer translation (reflect)."""
    B, _, H, W = x.shape
    if "xflip" in ops:
        flip = _coin(p, B, generator, x.device)[:, None, None, None]  # (B, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)  # (B, C, H, W)
    if "rotate90" in ops:
        if H != W:
            raise ValueError(f"ADA op 'rotate90' needs square images, got H={H}, W={W}; drop it from ops")
        turns = _randint(1, 4, B, generator, x.device) * _coin(p, B, generator, x.device)  # (B,) in 0..3
        x0 = x
        for k in (1, 2, 3):
            x = torch.where((turns == k)[:, None, None, None], torch.rot90(x0, k, dims=(2, 3)), x)  # (B, C, H, W)
    if "xint" in ops:
        on = _coin(p, B, generator, x.device)  # (B,)
        shift = (_uniform((2, B), generator, x.device) * 0.25 - 0.125) * on  # (2, B) fractions of the size
        dy, dx = (shift[0] * H).round().long(), (shift[1] * W).round().long()  # (B,), (B,)
        rows = _reflect(torch.arange(H, device=x.device) - dy[:, None], H)  # (B, H)
        cols = _reflect(torch.arange(W, device=x.device) - dx[:, None], W)  # (B, W)
        x = _gather(x, rows, cols)  # (B, C, H, W)
    return x


def _matrices(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """(B, 3, 3) homogeneous 2D matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from (B,) entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=1).view(-1, 3, 3)  # (B, 3, 3)


def _geometric_matrix(
    p: float, ops: Sequence[str], shape: tuple[int, int, int], generator: torch.Generator | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(B, 3, 3) sampling matrices (output pixel -> input pixel, in pixels, origin at the centre) for
    scale, rotate, aniso and xfrac of ``shape = (B, H, W)``, and (B,) bools: whether any op acted.

    The paper builds the inverse of each transform; every distribution here is symmetric under
    inversion, so drawing the sampling matrices directly gives the same augmentation distribution.
    """
    B, H, W = shape
    one, zero = torch.ones(B, device=device), torch.zeros(B, device=device)
    mat = torch.eye(3, device=device).expand(B, 3, 3)  # (B, 3, 3)
    acted = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    p_rot = 1.0 - math.sqrt(1.0 - p)  # two rotations, so that some rotation happens with probability p
    for op, prob in (("scale", p), ("rotate", p_rot), ("aniso", p), ("rotate", p_rot), ("xfrac", p)):
        if op not in ops:
            continue
        coin = _coin(prob, B, generator, device)  # (B,)
        acted, on = acted | coin, coin.float()  # (B,), (B,)
        if op == "rotate":
            theta = (_uniform((B,), generator, device) * 2.0 - 1.0) * math.pi * on  # (B,)
            step = _matrices(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zero, zero)  # (B, 3, 3)
        elif op == "xfrac":
            t = _normal((2, B), generator, device) * 0.125 * on  # (2, B) fractions of the size
            step = _matrices(one, zero, zero, one, t[0] * W, t[1] * H)  # (B, 3, 3)
        else:
            s = torch.exp(_normal((B,), generator, device) * (0.2 * math.log(2.0)) * on)  # (B,) lognormal
            step = _matrices(s, zero, zero, s if op == "scale" else 1.0 / s, zero, zero)  # (B, 3, 3)
        mat = mat @ step  # (B, 3, 3)
    return mat, acted


def _warp(x: Tensor, mat: Tensor) -> Tensor:
    """Resample (B, C, H, W) images through (B, 3, 3) sampling matrices in pixels (output -> input, origin
    at the image centre) with one bilinear ``F.grid_sample`` and reflection padding, in at least float32
    (a bf16 grid would misplace samples by a fraction of a pixel)."""
    _, _, H, W = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    half = torch.tensor([W / 2.0, H / 2.0, 1.0], device=x.device, dtype=dtype)  # (3,): S = diag(W/2, H/2, 1)
    theta = mat.to(dtype) * half[None, None, :] / half[None, :, None]  # (B, 3, 3): S^-1 M S, normalised
    grid = F.affine_grid(theta[:, :2], list(x.shape), align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.to(x.dtype)  # (B, C, H, W)


def _geometric(x: Tensor, p: float, ops: Sequence[str], generator: torch.Generator | None) -> Tensor:
    """ADA general geometric transforms composed into one matrix per sample and applied with one
    :func:`_warp`; samples no op acted on are returned bit-exact."""
    if not any(op in ops for op in _GEOMETRIC_OPS):
        return x
    B, _, H, W = x.shape
    mat, acted = _geometric_matrix(p, ops, (B, H, W), generator, x.device)  # (B, 3, 3), (B,)
    return torch.where(acted[:, None, None, None], _warp(x, mat), x)  # (B, C, H, W)


def _color_matrix(
    p: float, ops: Sequence[str], B: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(B, 4, 4) homogeneous colour matrices for brightness, contrast, lumaflip, hue and saturation,
    left-multiplied in the paper's order, and (B,) bools: whether any op acted on the sample."""
    eye = torch.eye(4, device=device, dtype=dtype)  # (4, 4)
    rgb = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], device=device, dtype=dtype))  # (4, 4)
    v = rgb.sum(dim=1) / math.sqrt(3.0)  # (4,) unit luma axis
    vvt = torch.outer(v, v)  # (4, 4)
    cross = torch.tensor([[0, -1, 1, 0], [1, 0, -1, 0], [-1, 1, 0, 0], [0, 0, 0, 0]], device=device, dtype=dtype)
    cross = cross / math.sqrt(3.0)  # (4, 4): [v]_x, the cross product with v
    sigmas = {"brightness": 0.2, "contrast": 0.5 * math.log(2.0), "saturation": math.log(2.0)}
    mat = eye.expand(B, 4, 4)  # (B, 4, 4)
    acted = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    for op in (op for op in _COLOR_OPS if op in ops):
        coin = _coin(p, B, generator, device)  # (B,)
        acted, on = acted | coin, coin.to(dtype)[:, None, None]  # (B,), (B, 1, 1)
        if op in sigmas:
            z = _normal((B,), generator, device).to(dtype)[:, None, None] * sigmas[op] * on  # (B, 1, 1)
        if op == "brightness":
            step = eye + z * torch.outer(rgb.diagonal(), eye[3])  # (B, 4, 4): add b to r, g and b
        elif op == "contrast":
            step = eye + (z.exp() - 1.0) * rgb  # (B, 4, 4) scale rgb by c
        elif op == "lumaflip":
            step = eye - 2.0 * vvt * on  # (B, 4, 4): Householder reflection along the luma axis
        elif op == "hue":
            theta = (_uniform((B,), generator, device).to(dtype) * 2.0 - 1.0)[:, None, None] * math.pi * on
            step = eye + theta.sin() * cross + (1.0 - theta.cos()) * (cross @ cross)  # Rodrigues about v
        else:
            step = vvt + (rgb - vvt) * z.exp() + (eye - rgb)  # (B, 4, 4) keeps luma, scales chroma by s
        mat = step @ mat  # (B, 4, 4)
    return mat, acted


def _color(x: Tensor, p: float, ops: Sequence[str], generator: torch.Generator | None) -> Tensor:
    """ADA colour transforms as one affine colour matrix per sample, in at least float32; grey (C = 1)
    pixels act as (g, g, g), so brightness, contrast and lumaflip (g -> -g) act and hue and saturation
    leave them unchanged."""
    if not any(op in ops for op in _COLOR_OPS):
        return x
    B, C, H, W = x.shape
    if C not in (1, 3):
        raise ValueError(f"ADA colour ops need 1 or 3 channels, got C={C}; drop {', '.join(_COLOR_OPS)} from ops")
    dtype = torch.promote_types(x.dtype, torch.float32)
    mat, acted = _color_matrix(p, ops, B, generator, x.device, dtype)  # (B, 4, 4), (B,)
    linear, offset = mat[:, :3, :3], mat[:, :3, 3]  # (B, 3, 3), (B, 3)
    if C == 1:
        linear, offset = linear.sum(dim=2).mean(dim=1)[:, None, None], offset.mean(dim=1, keepdim=True)
    out = linear @ x.to(dtype).flatten(2) + offset[:, :, None]  # (B, C, H*W)
    return torch.where(acted[:, None, None, None], out.view(B, C, H, W).to(x.dtype), x)  # (B, C, H, W)


def adaptive_augment(
    images: Tensor,
    p: float,
    ops: Sequence[AugmentOp] = ADA_OPS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ADA augmentation (Karras et al. 2020, https://arxiv.org/abs/2006.06676, Appendix B) of (B, C, H, W)
    images in [-1, 1]; returns (B, C, H, W) of the input dtype, differentiable w.r.t. ``images``.

    Each op in ``ops`` acts on each sample independently with probability ``p``; ``ops`` selects the
    ops, the order is always the paper's: pixel blitting (xflip, rotate90, xint: exact integer moves,
    reflection at the border), then scale, rotate, aniso and xfrac composed into one matrix per sample
    and applied with one bilinear ``F.grid_sample`` (reflection padding; the paper filters with a
    wavelet kernel instead), then brightness, contrast, lumaflip, hue and saturation as one colour
    matrix. Magnitudes are the paper's: xint U(-1/8, 1/8) of the size, scale and aniso lognormal with
    sigma 0.2 ln 2, rotate U(-pi, pi) drawn twice with probability 1 - sqrt(1 - p) each, xfrac
    N(0, 0.125^2), brightness N(0, 0.2^2), contrast lognormal(0, (0.5 ln 2)^2), hue U(-pi, pi) about
    the luma axis, saturation lognormal(0, (ln 2)^2). An op that acts always changes the image: xflip
    and lumaflip always flip and rotate90 turns by 90, 180 or 270 degrees (the paper draws the flip bit
    and the quarter turns after the coin, so its flips act with probability p/2; the adaptive ``p``
    absorbs the difference). rotate90 needs square images; the colour ops need C = 1 or 3, and on grey
    (C = 1) brightness, contrast and lumaflip (g -> -g) act while hue and saturation leave it unchanged.
    Samples no op touched, and everything when ``p = 0``, come back bit-exact.
    """
    check_augment_ops(ops)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"ADA probability p must be in [0, 1], got {p}")
    if p == 0.0:
        return images
    with torch.autocast(images.device.type, enabled=False):  # matrices and the grid stay in float32
        images = _blit(images, p, ops, generator)  # (B, C, H, W)
        images = _geometric(images, p, ops, generator)  # (B, C, H, W)
        return _color(images, p, ops, generator)  # (B, C, H, W)
