"""``genlit sample``: draw samples from any family's checkpoint into an ``.npz`` and a PNG grid, or text.

The ``.npz`` follows the guided-diffusion evaluation convention: ``arr_0`` uint8 (N, H, W, C) for images
(float32 (N, D) for flat toy data), ``arr_1`` int64 (N,) labels for conditional models. Language models
stream UTF-8 text to stdout (and to ``--out`` when given), continuing ``--prompt``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from tqdm import tqdm

from genlit.diffusion import DDIMSampler, DDPMSampler
from genlit.families.autoregressive import AutoregressiveLM
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


def sampling_parser_arguments(
    parser: argparse.ArgumentParser, num_required: bool = True, num_default: int | None = 10_000
) -> None:
    """The options of drawing samples from a checkpoint (shared by ``genlit sample`` and ``genlit evaluate``)."""
    shown = "" if num_required or num_default is None else f" (default {num_default})"
    parser.add_argument("--num", type=int, required=num_required, default=None if num_required else num_default,
                        help="number of samples" + shown)  # fmt: skip
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
    parser.add_argument("--out", default=None, help="images: output .npz (required; a PNG grid is written "
                        "beside it); language models: a text file (optional)")  # fmt: skip
    sampling_parser_arguments(parser, num_required=False, num_default=None)
    text = parser.add_argument_group("language-model checkpoints")
    text.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    text.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default 500)")
    text.add_argument("--temperature", type=float, default=None, help="0: greedy; default 1.0")
    text.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    text.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set of mass p")
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
    if (args.num is not None and args.num < 1) or args.batch_size < 1:
        raise ValueError("--num and --batch-size must be positive")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = load_family(args.ckpt, map_location=device).eval()
    if isinstance(model, AutoregressiveLM):
        return sample_text(model, args)
    _reject_text_options(args, model)
    if args.out is None or Path(args.out).suffix != ".npz":
        raise ValueError(f"--out must end in .npz for a {type(model).__name__} checkpoint, got {args.out}")
    if args.num is None:
        raise ValueError(f"--num is required for a {type(model).__name__} checkpoint (the number of samples)")
    out = Path(args.out)
    options = diffusion_options(args, model)
    samples, labels = draw(model, args.num, args.batch_size, args.seed, args.label, **options)
    write_npz(out, samples, labels)
    shown = samples[:64] if samples.dim() == 4 else samples  # a grid of 64 images, or every 2-D point
    save_png(samples_picture(shown), out.with_suffix(".png"))
    print(f"wrote {out} ({args.num} samples) and {out.with_suffix('.png')}")


TEXT_OPTIONS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p")


def _reject_text_options(args: argparse.Namespace, model) -> None:
    given = [f"--{name.replace('_', '-')}" for name in TEXT_OPTIONS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to language models only; this checkpoint holds a "
                         f"{type(model).__name__}")  # fmt: skip


def sample_text(model: AutoregressiveLM, args: argparse.Namespace) -> None:
    """Generate ``--num`` continuations of ``--prompt``, streamed to stdout and written to ``--out`` if given."""
    diffusion_options(args, model)  # rejects diffusion options
    if args.label is not None:
        raise ValueError("--label is only for class-conditional models; a language model has no classes")
    options = {
        "temperature": 1.0 if args.temperature is None else args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }
    prompt = "\n" if args.prompt is None else args.prompt
    max_new = 500 if args.max_new_tokens is None else args.max_new_tokens
    if max_new < 1:
        raise ValueError(f"--max-new-tokens must be positive, got {max_new}")
    ids = model.encode_prompt(prompt)  # (1, T0): errors before any output
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    texts = []
    for index in range(args.num or 1):
        if (args.num or 1) > 1:
            print(f"--- sample {index + 1} ---", flush=True)
        stream = TextStream(model.tokenizer, ids[0].tolist())
        print(prompt, end="", flush=True)
        out = model.generate(ids, max_new, generator=generator, on_tokens=stream.push, **options)
        stream.finish()
        texts.append(model.tokenizer.decode(out[0].tolist()))
    if args.out is not None:
        _write_text(Path(args.out), texts)
        print(f"wrote {args.out} ({len(texts)} sample{'s' if len(texts) > 1 else ''})", file=sys.stderr)


class TextStream:
    """Prints generated tokens as they come, decoding the whole continuation so multi-token characters
    (byte-level BPE) print once complete."""

    def __init__(self, tokenizer, prompt_ids: list[int]) -> None:
        self.tokenizer, self.prompt_ids, self.new_ids = tokenizer, prompt_ids, []
        self.printed = self.tokenizer.decode(prompt_ids)

    def push(self, token: torch.Tensor) -> None:
        """Add the next token (a (1,) tensor) and print what it completes."""
        self.new_ids.append(int(token[0]))
        text = self.tokenizer.decode(self.prompt_ids + self.new_ids)
        if text.endswith("\ufffd"):  # an unfinished UTF-8 sequence: wait for its other bytes
            return
        print(text[len(self.printed) :], end="", flush=True)
        self.printed = text

    def finish(self) -> None:
        """Print whatever is left and end the line."""
        text = self.tokenizer.decode(self.prompt_ids + self.new_ids)
        print(text[len(self.printed) :], flush=True)


def _write_text(out: Path, texts: list[str]) -> None:
    """Write the samples atomically, separated by blank-line-delimited headers when there are several."""
    body = texts[0] if len(texts) == 1 else "".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix, dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
    os.replace(tmp, out)
