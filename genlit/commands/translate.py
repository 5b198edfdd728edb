"""``genlit translate``: translate a file of images from one domain to the other with a translator's checkpoint.

    genlit translate --ckpt run/checkpoints/last.ckpt --input digits.npz --direction AB --out coloured.npz

Input and output follow the guided-diffusion evaluation convention: an ``.npz`` whose ``arr_0`` is uint8
(N, H, W, C); ``arr_1`` (labels, if the input has them) is passed through unchanged. The images must have the
source domain's channels and size (``AB``: domain A's, ``BA``: domain B's); they are translated ``--batch-size`` at
a time on ``--device``, and the output ``.npz`` and a PNG beside it (the first 16 inputs over their translations)
are written atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveInt
from tqdm.auto import tqdm

from genlit.callbacks.translation_grid import translation_picture
from genlit.checkpoints import load_family
from genlit.commands.options import parse_args, resolve_device
from genlit.data.images import to_model_space
from genlit.families.protocols import Translator
from genlit.imaging import save_png, write_samples_npz

_DESCRIPTION = (
    "Translate images between the two domains of a translator's checkpoint (CycleGAN): --input and --out are .npz "
    "files whose arr_0 is uint8 (N, H, W, C); arr_1 (labels) is passed through."
)
_SHOWN = 16  # inputs drawn in the PNG beside the output


def _parser():
    parser = ArgumentParser(prog="genlit translate", description=_DESCRIPTION, exit_on_error=False)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by genlit fit (a translator: CycleGAN)")
    parser.add_argument("--input", required=True, help=".npz whose arr_0 holds uint8 images (N, H, W, C)")
    parser.add_argument("--direction", required=True, type=Literal["AB", "BA"], help="AB: A to B, BA: B to A")
    parser.add_argument("--out", required=True, help="output .npz (a PNG of inputs and outputs is written beside it)")
    parser.add_argument("--batch-size", type=PositiveInt, default=256, help="images translated at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return parser


def read_images(path: str, shape: tuple[int, ...], direction: str) -> tuple[torch.Tensor, np.ndarray | None]:
    """The uint8 images (N, C, H, W) of ``path``'s ``arr_0`` and its ``arr_1`` (or None), checked against the
    source domain's ``shape`` (C, H, W); one clear error for a missing or unreadable file or other images."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--input {path} does not exist; pass an .npz whose arr_0 is uint8 (N, H, W, C)")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            images, labels = arrays["arr_0"], arrays["arr_1"] if "arr_1" in arrays else None
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--input {path} is not an .npz with an arr_0 array ({err})") from None
    c, h, w = shape
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"--input {path}: arr_0 must be uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    if images.shape[1:] != (h, w, c):
        raise ValueError(
            f"--input {path} holds images {images.shape[1:]} (H, W, C), but --direction {direction} translates "
            f"domain {direction[0]} images ({h}, {w}, {c}); give images of that size and channels"
        )
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels  # (N, C, H, W)


def translate_all(model: Translator, images: torch.Tensor, direction: str, batch_size: int) -> torch.Tensor:
    """Translations (N, C', H, W) in [-1, 1], on the CPU, of uint8 images (N, C, H, W), ``batch_size`` at a time."""
    parts = []
    with tqdm(total=len(images), desc=f"translating {direction}", unit="image", file=sys.stderr) as bar:
        for start in range(0, len(images), batch_size):
            chunk = to_model_space(images[start : start + batch_size])  # (b, C, H, W)
            parts.append(model.translate(chunk, direction).float().cpu())  # (b, C', H, W)
            bar.update(len(chunk))
    return torch.cat(parts)


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit translate``."""
    args = parse_args(_parser(), sys.argv[1:] if argv is None else list(argv))
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {args.out}")
    model = load_family(args.ckpt, map_location=resolve_device(args.device), needs="translate").eval()
    if not isinstance(model, Translator):
        raise ValueError(f"{args.ckpt} holds a {type(model).__name__}, which does not translate; pass a CycleGAN's")
    shape = model.shape_a if args.direction == "AB" else model.shape_b
    images, labels = read_images(args.input, shape, args.direction)
    if len(images) == 0:
        raise ValueError(f"--input {args.input} holds no images")
    translated = translate_all(model, images, args.direction, args.batch_size)  # (N, C', H, W)
    write_samples_npz(out, translated, None if labels is None else torch.from_numpy(labels))
    shown = to_model_space(images[:_SHOWN])  # (n, C, H, W)
    save_png(translation_picture(shown, translated[:_SHOWN]), out.with_suffix(".png"))
    print(f"wrote {out} ({len(images)} images, {args.direction}) and {out.with_suffix('.png')}")
