"""``genlit encode``: the discrete codes of a dataset split under a VQ-VAE checkpoint, for training a prior on them.

    genlit encode --ckpt runs/vqvae/vqvae_mnist/<run>/checkpoints/last.ckpt --split train --out codes.npz
    genlit fit --config experiments/vqvae/vqvae_prior_mnist.yaml --data.source codes.npz

The output ``.npz`` holds ``arr_0``, int64 code grids (N, h, w) in ``0 .. num_codes - 1``, which
:class:`~genlit.data.token_sequences.TokenSequenceDataModule` reads as sequences of h * w codes in raster order, and
``arr_1``, int64 labels (N,) (-1 for unlabelled data). The split is the one the model was trained with: the
checkpoint stores its DataModule's hyperparameters, so train is the same training images after the same validation
carve-out; ``--data`` points at the dataset where it now lives (or, for a checkpoint without them, names it). Any
family with the :class:`~genlit.families.protocols.DiscreteLatent` capability encodes.
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

from genlit.checkpoints import DATAMODULE_KEY, load_family, read_checkpoint
from genlit.commands.options import parse_args, resolve_device
from genlit.data.images import ImageDataModule, to_model_space
from genlit.families.protocols import DiscreteLatent
from genlit.files import atomic_write
from genlit.metrics.codebook import codes_in_use, perplexity

_DESCRIPTION = (
    "Encode a dataset split with a VQ-VAE checkpoint into an .npz of code grids (arr_0 int64 (N, h, w), arr_1 "
    "labels), the training data of a prior over the codes (TokenSequenceDataModule)."
)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="genlit encode", description=_DESCRIPTION, exit_on_error=False)
    parser.add_argument("--ckpt", required=True, help="checkpoint of a VQ-VAE written by genlit fit")
    parser.add_argument("--out", required=True, help="output .npz of code grids")
    parser.add_argument("--split", type=Literal["train", "val", "test"], default="train", help="the split encoded")
    parser.add_argument("--data", default=None, help="the dataset (Hub id or local path); default: the one the "
                        "checkpoint was trained on")  # fmt: skip
    parser.add_argument("--batch-size", type=PositiveInt, default=500, help="images encoded at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return parser


def image_data(ckpt: str | Path, data_shape: tuple[int, ...], data: str | None = None) -> ImageDataModule:
    """The image DataModule a checkpoint was trained with (rebuilt from the hyperparameters it stores), on the
    dataset ``data`` when given; without stored hyperparameters, ``data`` at the model's ``data_shape``."""
    stored = read_checkpoint(ckpt, mmap=True).get(DATAMODULE_KEY) or {}
    class_path = stored.get("_class_path", "")
    if class_path.rpartition(".")[2] == ImageDataModule.__name__:
        args = {k: v for k, v in stored.items() if not k.startswith("_")}
        module = ImageDataModule(**(args | ({"dataset": data} if data else {})))
    elif data:
        module = ImageDataModule(data, image_size=data_shape[-1], channels=data_shape[0])
    else:
        raise ValueError(f"{ckpt} does not record an image DataModule; name the dataset with --data")
    if tuple(module.data_shape) != tuple(data_shape):
        raise ValueError(f"the data are {module.data_shape} images but the model encodes {tuple(data_shape)}")
    return module


@torch.no_grad()
def encode_images(model: DiscreteLatent, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The codes (N, *code_shape), int64 on the CPU, of uint8 images (N, C, H, W), ``batch_size`` at a time."""
    parts = []
    with tqdm(total=len(images), desc="encoding", unit="image", file=sys.stderr) as bar:
        for start in range(0, len(images), batch_size):
            chunk = to_model_space(images[start : start + batch_size].to(model.device))  # (b, C, H, W)
            parts.append(model.encode_codes(chunk).cpu())  # (b, h, w)
            bar.update(len(chunk))
    return torch.cat(parts) if parts else torch.empty(0, *model.code_shape, dtype=torch.long)


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit encode``."""
    args = parse_args(_parser(), sys.argv[1:] if argv is None else list(argv))
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {args.out}")
    model = load_family(args.ckpt, map_location=resolve_device(args.device), needs="encode_codes").eval()
    if not isinstance(model, DiscreteLatent):
        raise ValueError(f"{args.ckpt} holds a {type(model).__name__}, which has no discrete codes; pass a VQ-VAE's")
    data = image_data(args.ckpt, model.data_shape, args.data)
    data.prepare_data()
    data.setup("test" if args.split == "test" else "fit")
    images, labels = data.split_tensors(args.split)  # (N, C, H, W) uint8, (N,)
    if len(images) == 0:
        raise ValueError(f"the {args.split} split holds no images")
    codes = encode_images(model, images, args.batch_size)  # (N, h, w)
    with atomic_write(out) as handle:
        np.savez(handle, arr_0=codes.numpy().astype(np.int64), arr_1=labels.numpy().astype(np.int64))
    counts = torch.bincount(codes.flatten(), minlength=model.num_codes).float()  # (K,)
    grid = "x".join(str(s) for s in model.code_shape)
    print(f"wrote {out}: {len(codes)} code grids of {grid} ({args.split} split), {int(codes_in_use(counts))} of "
          f"{model.num_codes} codes in use, perplexity {float(perplexity(counts)):.1f}")  # fmt: skip
