"""``genlit sample``: draw samples from any family's checkpoint into an ``.npz`` and a PNG grid, or text.

The ``.npz`` follows the guided-diffusion evaluation convention: ``arr_0`` uint8 (N, H, W, C) for images
(float32 (N, D) for flat toy data), ``arr_1`` int64 (N,) labels for conditional models. Language models
stream UTF-8 text to stdout (and to ``--out`` when given), continuing ``--prompt``. An autoregressive model of
token ids without a tokenizer (a prior over VQ-VAE codes, :mod:`genlit.data.token_sequences`) writes its
sequences to an ``.npz``: ``arr_0`` int64 (N, L) token ids. Sample i depends only on (``--seed``, i):
``--batch-size`` changes the speed, never the samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import PositiveInt

from genlit.callbacks.sample_writer import SampleWriter
from genlit.commands.options import contract_options, parse_command, resolve_device
from genlit.data.requests import SampleRequests
from genlit.families.protocols import Generative, MaskFiller, TextModel
from genlit.files import atomic_write
from genlit.imaging import write_samples
from genlit.seeding import SampleRNG

_DESCRIPTION = (
    "Draw samples from a genlit checkpoint: images into an .npz (arr_0 uint8 (N, H, W, C), arr_1 labels) and a "
    "PNG grid, or text streamed to stdout. Sample i depends only on (--seed, i)."
)


def _arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint written by genlit fit, or a folder written by "
                        "genlit export")  # fmt: skip
    parser.add_argument("--out", default=None, help="images: output .npz (required; a PNG grid is written beside "
                        "it); language models: a text file (optional); token ids: output .npz (required)")  # fmt: skip
    parser.add_argument("--devices", type=PositiveInt, default=1, help="draw on this many devices (Lightning's "
                        "predict loop, DDP; --device names their kind); the samples are the same")  # fmt: skip
    parser.add_argument("--num-nodes", type=PositiveInt, default=1, help="nodes of a multi-node draw")


def draw(model: Generative, num: int, *, seed: int = 0, batch_size: int = 500, labels=None, **options):
    """Samples 0..num-1 of ``model`` under ``seed`` on the CPU, and their labels (the balanced default of a
    conditional model when none are given; None for an unconditional one). ``options`` go to ``sample_many``
    (``use_ema``, ``progress``, the family's options)."""
    samples = model.sample_many(range(num), seed=seed, batch_size=batch_size, labels=labels, **options)
    if labels is None and model.conditional:
        labels = model.sample_labels(torch.arange(num))  # the balanced default the model drew
    return samples.float().cpu(), None if labels is None else labels.cpu()


def draw_as_asked(model: Generative, args, options: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`draw` with the command line's ``--num``, ``--seed``, ``--batch-size``, ``--label`` and ``--no-ema``."""
    contract = contract_options(args, model, args.num)
    return draw(model, args.num, seed=args.seed, batch_size=args.batch_size, progress=True, **contract, **options)


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit sample``."""
    model, args, options = parse_command("genlit sample", _DESCRIPTION, argv, _arguments)
    if isinstance(model, TextModel) and model.tokenizer is not None:
        return sample_text(model, args, options)
    if isinstance(model, MaskFiller):
        return fill_masks(model, args, options)
    name = type(model).__name__
    if args.out is None or Path(args.out).suffix != ".npz":
        raise ValueError(f"--out must end in .npz for a {name} checkpoint, got {args.out}")
    if args.num is None:
        raise ValueError(f"--num is required for a {name} checkpoint (the number of samples)")
    out = Path(args.out)
    if isinstance(model, TextModel):  # token ids without a tokenizer
        return sample_tokens(model, args, options, out)
    if args.devices > 1 or args.num_nodes > 1:
        return draw_on_devices(model, args, options, out)
    samples, labels = draw_as_asked(model, args, options)
    write_samples(out, samples, labels)
    print(f"wrote {out} ({args.num} samples) and {out.with_suffix('.png')}")


def draw_on_devices(model: Generative, args, options: dict, out: Path) -> None:
    """Draw ``--num`` samples with Lightning's predict loop over ``--devices`` x ``--num-nodes`` (DDP), written by
    :class:`~genlit.callbacks.sample_writer.SampleWriter`: the same ``.npz`` as one process draws, plus shards."""
    contract = contract_options(args, model, args.num)
    model.predict_options = {"use_ema": contract["use_ema"], **options}
    accelerator = resolve_device(args.device).split(":")[0].replace("cuda", "gpu")
    trainer = L.Trainer(accelerator=accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy="ddp",
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[SampleWriter(str(out))], default_root_dir=str(out.parent))  # fmt: skip
    requests = SampleRequests(args.num, args.seed, args.batch_size, args.label)
    trainer.predict(model, datamodule=requests, return_predictions=False)
    if trainer.is_global_zero:
        print(f"wrote {out} ({args.num} samples on {trainer.world_size} processes) and {out.with_suffix('.png')}")


def sample_text(model: TextModel, args, options: dict) -> None:
    """Generate ``--num`` continuations of ``--prompt``, streamed to stdout and written to ``--out`` if given.
    Continuation i is the model's sample i under ``--seed``."""
    contract_options(args, model, 1)  # rejects --label and --no-ema
    if args.devices > 1 or args.num_nodes > 1:
        raise ValueError("--devices and --num-nodes draw images; a language model's texts stream from one device")
    prompt = options.pop("prompt")
    ids = model.encode_prompt(prompt)  # (1, T0); no --prompt: the model's default (a newline)
    if prompt is None:
        prompt = model.tokenizer.decode(ids[0].tolist())
    max_new = model.new_tokens(options.pop("max_new_tokens"))
    num = args.num or 1
    texts = []
    for index in range(num):
        if num > 1:
            print(f"--- sample {index + 1} ---", flush=True)
        stream = TextStream(model.tokenizer, ids[0].tolist())
        print(prompt, end="", flush=True)
        rng = SampleRNG([index], args.seed, model.device)
        out = model.generate(ids, max_new, generator=rng, on_tokens=stream.push, **options)
        stream.finish()
        texts.append(model.tokenizer.decode(out[0].tolist()))
    if args.out is not None:
        body = texts[0] if num == 1 else "".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts))
        with atomic_write(args.out, "w", encoding="utf-8") as handle:
            handle.write(body)
        print(f"wrote {args.out} ({num} sample{'s' if num > 1 else ''})", file=sys.stderr)


def sample_tokens(model: TextModel, args, options: dict, out: Path) -> None:
    """Draw ``--num`` sequences of token ids from a model without a tokenizer (:func:`~genlit.families.base.
    GenerativeFamily.sample_many`: sample i depends only on (``--seed``, i)) into ``out``: ``arr_0`` int64 (N, L)."""
    if args.devices > 1 or args.num_nodes > 1:
        raise ValueError("--devices and --num-nodes draw images; a token model's sequences are drawn on one device")
    contract = contract_options(args, model, args.num)  # rejects --label and --no-ema
    draws = {"seed": args.seed, "batch_size": args.batch_size, "progress": True}
    tokens = model.sample_many(range(args.num), **draws, **contract, **options)  # (N, L) int64
    with atomic_write(out) as handle:
        np.savez(handle, arr_0=tokens.cpu().numpy().astype(np.int64))
    print(f"wrote {out} ({args.num} sequences of {tokens.size(1)} token ids)")


def fill_masks(model: MaskFiller, args, options: dict) -> None:
    """Fill the ``[MASK]`` tokens of ``--prompt`` (or ``--length`` masks from nothing) ``--num`` times, printing
    each text and writing them to ``--out`` if given, with a progress bar over the unmasking rounds. Text i is the
    model's sample i under ``--seed``."""
    contract_options(args, model, 1)  # rejects --label and --no-ema
    if args.devices > 1 or args.num_nodes > 1:
        raise ValueError("--devices and --num-nodes draw images; a masked language model's texts fill on one device")
    prompt, length = options.pop("prompt"), options.pop("length")
    ids = model.encode_prompt(prompt) if prompt is not None else model.free_ids(1, length)  # (1, T)
    num = args.num or 1
    texts = []
    for index in range(num):
        rng = SampleRNG([index], args.seed, model.device)
        text = model.decode(model.fill(ids, rng=rng, progress=True, **options)[0])
        print(f"--- sample {index + 1} ---\n{text}" if num > 1 else text, flush=True)
        texts.append(text)
    if args.out is not None:
        body = texts[0] if num == 1 else "".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts))
        with atomic_write(args.out, "w", encoding="utf-8") as handle:
            handle.write(body)
        print(f"wrote {args.out} ({num} sample{'s' if num > 1 else ''})", file=sys.stderr)


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
