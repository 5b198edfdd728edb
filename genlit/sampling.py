"""``genlit sample``: draw samples from any family's checkpoint into an ``.npz`` and a PNG grid.

The ``.npz`` follows the guided-diffusion evaluation convention: ``arr_0`` uint8 (N, H, W, C) for images
(float32 (N, D) for flat toy data), ``arr_1`` int64 (N,) labels for conditional models.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from tqdm import tqdm

from genlit.diffusion import DDIMSampler, DDPMSampler
from genlit.families.diffusion import Diffusion
from genlit.imaging import samples_picture, save_png, to_uint8


def load_family(ckpt: str | os.PathLike, map_location: str = "cpu", needs: str = "sample") -> L.LightningModule:
    """Rebuild a genlit LightningModule from its Lightning checkpoint alone (hyperparameters + weights);
    a clear error unless it has the method ``needs`` (``sample`` for generative families)."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict); pass a genlit .ckpt file")
    family = _family_class(path, checkpoint.get("hyper_parameters") or {}, needs)
    return family.load_from_checkpoint(path, map_location=map_location)


def _family_class(path: Path, hparams: dict, needs: str) -> type[L.LightningModule]:
    class_path = hparams.get("_class_path")
    if not class_path:
        raise ValueError(
            f"{path} does not record its model class; it was not written by `genlit fit` "
            "(load it in Python with YourModule.load_from_checkpoint)"
        )
    module_name, _, name = class_path.rpartition(".")
    try:
        family = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{path} was written by {class_path}, which cannot be imported here") from None
    if not callable(getattr(family, needs, None)):
        what = "a generative family" if needs == "sample" else f"a module with {needs}()"
        raise ValueError(f"{path} holds a {name}, which has no {needs}(); pass a checkpoint of {what}")
    return family


def draw(model, num: int, batch_size: int, seed: int, label: int | None = None, **sample_kwargs):
    """Draw ``num`` samples in batches with a progress bar; returns (samples, labels or None) on CPU.

    ``sample_kwargs`` go to the family's ``sample`` (a diffusion model's sampler, guidance scale, ...).
    """
    generator = torch.Generator(device=model.device).manual_seed(seed)
    labels = _labels(model, num, label)
    chunks = []
    with tqdm(total=num, desc="sampling", unit="sample") as bar:
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            batch_labels = None if labels is None else labels[start : start + size].to(model.device)
            chunks.append(model.sample(size, labels=batch_labels, generator=generator, **sample_kwargs).float().cpu())
            bar.update(size)
    return torch.cat(chunks), labels


def _labels(model, num: int, label: int | None) -> torch.Tensor | None:
    if not getattr(model, "conditional", False):
        if label is not None:
            raise ValueError("--label is only for class-conditional models; this checkpoint is unconditional")
        return None
    if label is not None and not 0 <= label < model.num_classes:
        raise ValueError(f"--label must be in [0, {model.num_classes}), got {label}")
    if label is not None:
        return torch.full((num,), label, dtype=torch.long)
    return torch.arange(num) % model.num_classes  # balanced classes


def write_npz(out: Path, samples: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Write ``arr_0`` (and ``arr_1``) atomically: a failure leaves no partial file behind."""
    arrays = {"arr_0": to_uint8(samples).numpy() if samples.dim() == 4 else samples.numpy().astype(np.float32)}
    if labels is not None:
        arrays["arr_1"] = labels.numpy().astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=out.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sampling_parser_arguments(parser: argparse.ArgumentParser, num_required: bool = True) -> None:
    """The options of drawing samples from a checkpoint (shared by ``genlit sample`` and ``genlit evaluate``)."""
    parser.add_argument("--num", type=int, required=num_required, default=None if num_required else 10_000,
                        help="number of samples" + ("" if num_required else " (default 10000)"))  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--label", type=int, default=None, help="class of every sample (conditional models)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    diffusion = parser.add_argument_group("diffusion checkpoints")
    diffusion.add_argument("--sampler", choices=["ddpm", "ddim"], default=None, help="default: the model's own")
    diffusion.add_argument("--steps", type=int, default=None, help="denoising steps (default: ddpm all T, ddim 50)")
    diffusion.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0: deterministic, 1: DDPM-like)")
    diffusion.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale")
    diffusion.add_argument("--no-ema", action="store_true", help="sample the trained net, not its EMA")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlit sample", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint written by genlit fit")
    parser.add_argument("--out", required=True, help="output .npz; a PNG grid is written beside it")
    sampling_parser_arguments(parser)
    return parser


def diffusion_options(args: argparse.Namespace, model) -> dict:
    """``sample`` keyword arguments of the diffusion options given; a clear error if the checkpoint is not
    a diffusion model."""
    given = {
        "--sampler": args.sampler is not None,
        "--steps": args.steps is not None,
        "--eta": args.eta != 0.0,
        "--guidance-scale": args.guidance_scale is not None,
        "--no-ema": args.no_ema,
    }
    if not isinstance(model, Diffusion):
        if any(given.values()):
            names = ", ".join(name for name, on in given.items() if on)
            raise ValueError(f"{names} apply to diffusion checkpoints only; this one holds a {type(model).__name__}")
        return {}
    if args.guidance_scale is not None and not model.conditional:
        raise ValueError("--guidance-scale needs a class-conditional diffusion model; this one is unconditional")
    if args.eta != 0.0 and args.sampler != "ddim":
        raise ValueError("--eta is a DDIM option; add --sampler ddim")
    options = {"use_ema": not args.no_ema, "guidance_scale": args.guidance_scale, "progress": True}
    if args.sampler == "ddpm":
        options["sampler"] = DDPMSampler(args.steps)
    elif args.sampler == "ddim":
        options["sampler"] = DDIMSampler(args.steps or 50, eta=args.eta)
    elif args.steps is not None:
        raise ValueError("--steps needs --sampler ddpm or --sampler ddim")
    return options


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit sample``."""
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    if args.num < 1 or args.batch_size < 1:
        raise ValueError("--num and --batch-size must be positive")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = load_family(args.ckpt, map_location=device).eval()
    options = diffusion_options(args, model)
    samples, labels = draw(model, args.num, args.batch_size, args.seed, args.label, **options)
    write_npz(out, samples, labels)
    shown = samples[:64] if samples.dim() == 4 else samples  # a grid of 64 images, or every 2-D point
    save_png(samples_picture(shown), out.with_suffix(".png"))
    print(f"wrote {out} ({args.num} samples) and {out.with_suffix('.png')}")
