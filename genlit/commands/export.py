"""``genlit export``: a checkpoint as a folder to share, with no pickle in it: weights, config, tokenizer, model card.

    genlit export --ckpt runs/vae/vae_mnist/<run>/checkpoints/last.ckpt --out exports/vae_mnist
    genlit sample --ckpt exports/vae_mnist --num 64 --out samples.npz        # or genlit.load("exports/vae_mnist")
    genlit fit --config experiments/vae/vae_mnist.yaml --model.init_from exports/vae_mnist   # fine-tune it

The folder holds:

- ``model.safetensors``: the weights used for sampling, the EMA's where the family keeps one (all the module's
  tensors, the discriminator of a GAN included, so it also serves ``init_from``), read with
  ``safetensors.torch.load_file``;
- ``config.json``: the module's class path and hyperparameters as the checkpoint saved them (nets as
  ``class_path``/``init_args``), enough to rebuild it without a pickle (:func:`genlit.checkpoints.load_exported`),
  plus the checkpoint it came from and the data it was trained on;
- ``tokenizer.json`` where the family has one (language models);
- ``README.md``: a model card in the Hugging Face format (:mod:`genlit.commands.model_card`), with the metrics of a
  ``genlit evaluate`` record found beside the checkpoint (``<checkpoint>.eval.json``, its default ``--out``);
- ``model.onnx`` with ``--format onnx`` (or ``--format safetensors onnx``): the network forward the family samples
  with, checked against torch with ONNX Runtime (:mod:`genlit.commands.onnx_export`); ``config.json`` records its
  inputs and outputs.

A run with LoRA adapters (``--model.lora``) is exported with the adapters merged into the weights they adapt (peft's
``merge_and_unload``): plain weights under the plain names, which load without peft; ``config.json`` records the
LoRA options under ``source``. ``--push-to-hub owner/name`` also uploads the folder to the Hugging Face Hub as one
commit (:mod:`genlit.commands.hub`); the Hub is asked first, so offline it is one line and nothing is written. The
folder is written atomically (:func:`genlit.files.atomic_folder`): complete, or
not there at all.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from genlit.checkpoints import (
    DATAMODULE_KEY,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_WEIGHTS,
    load_family,
    read_checkpoint,
)
from genlit.commands.hub import check_hub, push_folder
from genlit.commands.model_card import model_card
from genlit.commands.onnx_export import ONNX_FILE, write_onnx
from genlit.commands.options import parse_args
from genlit.families.tokenized import TOKENIZER_KEY
from genlit.families.transfer import EMA_PREFIX, TRANSFER_PARAMETERS
from genlit.files import atomic_folder

_DESCRIPTION = (
    "Export a genlit checkpoint as a folder to share: model.safetensors (the sampling weights, EMA where kept), "
    "config.json (class and hyperparameters), the tokenizer and a model card (README.md); with --format onnx, "
    "model.onnx (the sampling forward, checked with ONNX Runtime). No pickle in it."
)
FORMATS = ("safetensors", "onnx")
TOKENIZER_FILE = "tokenizer.json"
CARD_FILE = "README.md"
_LOCAL_KEYS = ("_class_path", "_instantiator", *(p.name for p in TRANSFER_PARAMETERS))  # how it ran, not what it is


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="genlit export", description=_DESCRIPTION, exit_on_error=False)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by genlit fit")
    parser.add_argument("--out", required=True, help="the folder to write (it must not exist, or be empty)")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["safetensors"], help="what to write: "
                        "safetensors (the weights genlit loads), onnx (model.onnx, the sampling forward) or "
                        "both")  # fmt: skip
    parser.add_argument("--license", default="unknown", help="the model's licence in the card (an SPDX or Hugging "
                        "Face licence id, e.g. apache-2.0)")  # fmt: skip
    parser.add_argument("--data-license", default=None, help="the training data's licence, for the card; without "
                        "it, a local dataset's own card is read, else it is unknown")  # fmt: skip
    parser.add_argument("--metrics", default=None, help="a genlit evaluate JSON for the card; without it, "
                        "<checkpoint>.eval.json beside the checkpoint, if there is one")  # fmt: skip
    parser.add_argument("--push-to-hub", default=None, help="also upload the folder to this Hugging Face model "
                        "repository (owner/name), as one commit; the Hub is checked before anything is "
                        "written")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit export``."""
    args = parse_args(_parser(), sys.argv[1:] if argv is None else list(argv))
    if args.push_to_hub:
        check_hub(args.push_to_hub)  # offline or logged out: one line, and nothing written
    out = export(args.ckpt, args.out, formats=args.format, license=args.license, data_license=args.data_license,
                 metrics=args.metrics)  # fmt: skip
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    if args.push_to_hub:
        print(f"pushed to {push_folder(out, args.push_to_hub)}")


def export(
    ckpt: str | Path,
    out: str | Path,
    *,
    formats: tuple[str, ...] | list[str] = ("safetensors",),
    license: str = "unknown",
    data_license: str | None = None,
    metrics: str | Path | None = None,
) -> Path:
    """Write the export folder ``out`` of checkpoint ``ckpt`` in ``formats`` (see the module docstring) and return
    its path; ``license``, ``data_license`` and ``metrics`` (an evaluation record) go into the model card."""
    ckpt, out = Path(ckpt), Path(out)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"--format {' '.join(unknown)}: choose among {', '.join(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; remove it or choose another folder")
    model = load_family(ckpt, needs="state_dict")  # any genlit module; refuses what genlit does not write
    checkpoint = read_checkpoint(ckpt, mmap=True)
    config = export_config(model, checkpoint, ckpt) | {"formats": [f for f in FORMATS if f in formats]}
    lora = model.merge_lora()  # the adapters merged into the weights: plain names, no peft needed to load
    config["source"]["lora"] = None if lora is None else lora.hparams()
    record = evaluation_record(ckpt, metrics)
    with atomic_folder(out) as folder:
        if "safetensors" in formats:
            save_weights(model, folder / EXPORT_WEIGHTS, config["class_path"])
        if "onnx" in formats:
            config["onnx"] = write_onnx(model, folder / ONNX_FILE)
        if TOKENIZER_KEY in config["checkpoint_extras"]:
            (folder / TOKENIZER_FILE).write_text(checkpoint[TOKENIZER_KEY], encoding="utf-8")
        (folder / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        card = model_card(config, record, name=out.name, license=license, data_license=data_license)
        (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return out


def export_config(model, checkpoint: dict, ckpt: Path) -> dict:
    """``config.json``: the class path and hyperparameters (as saved, JSON; the transfer options left out), the
    checkpoint's extras stored as files (the tokenizer), which weights these are, where they came from and the
    data's hyperparameters."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    data = {k: v for k, v in (checkpoint.get(DATAMODULE_KEY) or {}).items() if k != "_instantiator"}
    return {
        "format": EXPORT_FORMAT,
        "class_path": hparams["_class_path"],  # load_family checked that it is there
        "hyper_parameters": json_ready({k: v for k, v in hparams.items() if k not in _LOCAL_KEYS}),
        "checkpoint_extras": {TOKENIZER_KEY: TOKENIZER_FILE} if TOKENIZER_KEY in checkpoint else {},
        "weights": "ema" if getattr(model, "ema", None) is not None else "trained",
        "source": {
            "checkpoint": str(ckpt),
            "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            "init_from": hparams.get("init_from"),
        },
        "data": json.loads(json.dumps(data, default=str)),  # a record only: never instantiated
    }


def json_ready(value, where: str = "hyperparameter"):
    """``value`` (nested dicts, lists, tuples, numbers, strings, paths) as JSON values; one clear error for an object
    JSON cannot hold (a module built in Python rather than by ``genlit fit`` from class paths)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, f"{where} {k}" if where == "hyperparameter" else where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, where) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Path):
        return str(value)
    raise ValueError(f"{where} holds a {type(value).__name__}, which config.json cannot record; export a "
                     "checkpoint of genlit fit, whose config names classes by class_path/init_args")  # fmt: skip


def save_weights(model, path: Path, class_path: str) -> None:
    """The module's tensors, the averaged network holding its EMA weights (its EMA copy itself left out), as
    safetensors (each tensor its own contiguous copy: tied weights are stored twice)."""
    from safetensors.torch import save_file

    ema_weights = getattr(model, "ema_weights", contextlib.nullcontext)  # a translator (CycleGAN) keeps no EMA
    with ema_weights(), torch.no_grad():
        tensors = {name: t.detach().cpu().clone().contiguous() for name, t in model.state_dict().items()
                   if not name.startswith(EMA_PREFIX)}  # fmt: skip
    save_file(tensors, path, metadata={"format": "pt", "genlit_class": class_path})


def evaluation_record(ckpt: Path, metrics: str | Path | None) -> dict | None:
    """The ``genlit evaluate`` record for the card: ``metrics`` (required to exist when given), else the one
    beside the checkpoint at evaluate's default ``--out`` (``<checkpoint>.eval.json``), else None."""
    path = Path(metrics) if metrics else ckpt.with_suffix(".eval.json")
    if not path.is_file():
        if metrics:
            raise FileNotFoundError(f"--metrics {path}: no such file; pass the JSON genlit evaluate wrote")
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"--metrics {path} is not JSON ({err}); pass the JSON genlit evaluate wrote") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ValueError(f"--metrics {path} has no metrics; pass the JSON genlit evaluate wrote")
    return record | {"path": str(path)}
