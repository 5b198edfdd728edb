"""``genlit evaluate``: sample quality of a checkpoint or of any ``.npz`` of samples against reference data.

    genlit evaluate --samples samples.npz --data /path/to/mnist --split test --extractor evaluator:mnist_classifier
    genlit evaluate --ckpt runs/.../last.ckpt --num 10000 --data /path/to/mnist --extractor evaluator:mnist_classifier

Prints a table and writes JSON (``--out``, default beside the input): FID, KID (mean and std), IS,
precision and recall, class coverage, the label accuracy of conditional samples, and for VAE and
diffusion checkpoints the test NLL in bits/dim; with the extractor's identity, the sample count and the
reference split, so figures are only compared when they were measured alike. ``--extractor evaluator:NAME`` (or
the path of an evaluator YAML) is genlit's evaluator trained on ``--extractor-data`` (default: ``--data``), found in
the cache or trained there once (:mod:`genlit.metrics.evaluators`). Reference features are cached per (dataset,
split, image shape, extractor) in ``--cache-dir`` (default ``references`` in :func:`genlit.files.cache_root`).

For a language-model checkpoint ``--data`` is a text source (as ``TextDataModule``'s) and the figures are
the split's loss, perplexity and bits per character (or byte), over non-overlapping blocks of the model's
context, encoded with the checkpoint's own tokenizer:

    genlit evaluate --ckpt runs/autoregressive/.../last.ckpt --data $GENLIT_DATA_DIR/tinyshakespeare/input.txt
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch

from genlit.commands.options import parse_command, resolve_device
from genlit.commands.sample import draw_as_asked
from genlit.data.hub import resolve_dataset
from genlit.data.images import ImageDataModule
from genlit.data.text import TextDataModule, TokenBlocks
from genlit.families.protocols import Generative, Likelihood, TextModel
from genlit.files import atomic_write, cache_root
from genlit.imaging import to_uint8
from genlit.metrics.evaluators import is_evaluator_spec
from genlit.metrics.extractors import make_extractor
from genlit.metrics.features import FeatureExtractor, extract
from genlit.metrics.fidelity import SampleQuality, class_statistics

_DESCRIPTION = (
    "Sample quality of a checkpoint or of an .npz of samples against reference data (FID, KID, IS, precision/"
    "recall, class statistics, the test NLL), or a language model's loss and bits per character on a text split."
)


def reference_cache() -> Path:
    """The default ``--cache-dir``: ``references`` under genlit's cache folder (read when called)."""
    return cache_root() / "references"


def load_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, C, H, W) and labels (N,) or None from an ``.npz`` with ``arr_0`` uint8 (N, H, W, C)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--samples {path}: no such file")
    try:
        arrays = np.load(path)
        names = set(arrays.files)
    except (ValueError, OSError) as err:
        raise ValueError(f"--samples {path} is not a readable .npz ({err})") from None
    if "arr_0" not in names:
        raise ValueError(f"--samples {path} has no arr_0 (it has {sorted(names)}); write images as arr_0")
    shape = "uint8 of shape (N, H, W, C) with C 1 or 3"
    images = images_for_metrics(arrays["arr_0"], f"--samples {path}: arr_0 must be {shape}")
    if len(images) < 2:
        raise ValueError(f"--samples {path} holds {len(images)} images; the metrics need at least 2")
    labels = torch.from_numpy(arrays["arr_1"]).long() if "arr_1" in names else None
    return images, labels


def images_for_metrics(images: np.ndarray, error: str) -> torch.Tensor:
    """uint8 (N, C, H, W) of a uint8 (N, H, W, C) array with C 1 or 3; otherwise ``error`` with what was given."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{error}, got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def drawn_images(samples: torch.Tensor, source: str) -> torch.Tensor:
    """uint8 (N, C, H, W) of samples (N, C, H, W) in [-1, 1] that ``source`` drew; one clear error for non-images."""
    if samples.dim() != 4:
        raise ValueError(f"{source} draws {tuple(samples.shape[1:])}-shaped samples; evaluate needs images")
    return to_uint8(samples).permute(0, 3, 1, 2).contiguous()


def reference_features(
    extractor: FeatureExtractor, data: ImageDataModule, split: str, cache_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(features, logits, labels, key) of a reference split, cached on disk per (dataset, split, shape, extractor)."""
    key = {
        "dataset": data.hparams.dataset,
        "split": split,
        "data_shape": list(data.data_shape),
        "extractor": extractor.identity,
    }
    path = cache_dir / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".pt")
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached["key"] == key:
            return cached["features"], cached["logits"], cached["labels"], key
    data.prepare_data()
    data.setup("test" if split == "test" else "fit")
    images, labels = data.split_tensors(split)
    features, logits = extract(extractor, images)
    with atomic_write(path) as handle:
        torch.save({"key": key, "features": features, "logits": logits, "labels": labels}, handle)
    return features, logits, labels, key


def evaluate(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    extractor: FeatureExtractor,
    reference: tuple[torch.Tensor, torch.Tensor],
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """Every sample-quality figure of uint8 images (N, C, H, W) (with requested labels, if conditional)."""
    features, logits = extract(extractor, images)
    quality = SampleQuality(extractor.num_features, extractor.num_classes, kid_subset_size=kid_subset_size)
    quality.update_real(reference[0])
    quality.update_fake(features, logits)
    return quality.compute() | class_statistics(logits, labels)


def test_nll(model: Likelihood, data: ImageDataModule) -> dict[str, float]:
    """The family's own test NLL figures (``test/nll*``) on the reference test split."""
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="auto")
    results = trainer.test(model, datamodule=data, verbose=False)
    return {k.removeprefix("test/"): float(v) for k, v in (results[0] if results else {}).items() if "nll" in k}


def _arguments(parser) -> None:
    parser.add_argument("--ckpt", default=None, help="a genlit checkpoint: samples are drawn from it")
    parser.add_argument("--samples", default=None, help=".npz with arr_0 uint8 (N, H, W, C) (and arr_1 labels)")
    parser.add_argument("--data", default=None, help="reference dataset (Hub id or local path); text for LMs")
    parser.add_argument("--split", type=Literal["train", "val", "test"], default="test")
    parser.add_argument("--extractor", default=None, help="images: 'inception', evaluator:NAME or an evaluator YAML "
                        "(trained once on --extractor-data, cached), or a genlit classifier checkpoint")  # fmt: skip
    parser.add_argument("--extractor-data", default=None, help="the dataset an evaluator config is trained on "
                        "(default: --data)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=0.1, help="text: held-out share, as in training")
    parser.add_argument("--inception-weights", default=None, help="local Inception-v3 weights (torch-fidelity)")
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--skip-nll", action="store_true", help="do not run the family's test NLL (--ckpt)")
    parser.add_argument("--cache-dir", default=None, help="reference features cache (default: references in "
                        "$GENLIT_CACHE_DIR, else $XDG_CACHE_HOME/genlit, else ~/.cache/genlit)")  # fmt: skip
    parser.add_argument("--out", default=None, help="JSON results (default: beside the input)")
    parser.add_argument("--anomaly", default=None, help="an .npz of images to score for anomalies with --ckpt (a "
                        "VAE, PixelCNN or flow): per-example scores to --out (.npz, default beside it), a JSON "
                        "record")  # fmt: skip
    parser.add_argument("--background", default=None, help="--anomaly: a background model's checkpoint (ratio)")
    parser.add_argument("--anomalous-classes", type=list[int] | None, default=None, help="--anomaly: labels (arr_1) "
                        "of the anomalies; the record then holds each score's AUROC")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit evaluate``."""
    model, args, options = parse_command("genlit evaluate", _DESCRIPTION, argv, _arguments, num_default=10_000)
    if args.anomaly is not None:
        return _score_anomalies(args, model)
    if (args.ckpt is None) == (args.samples is None):
        raise ValueError("give exactly one of --ckpt (a checkpoint to sample) and --samples (an .npz of samples)")
    if args.data is None:
        raise ValueError("--data is required: the reference dataset (Hub id or local path; a text file for LMs)")
    if args.num < 2 or args.kid_subset_size < 2:
        raise ValueError("--num and --kid-subset-size must be >= 2")
    if isinstance(model, TextModel):
        record = text_record(model, args.data, args.split, args.val_fraction, args.batch_size, str(args.ckpt))
        return _report(args, record)
    if args.extractor is None:
        raise ValueError("--extractor is required for images: evaluator:mnist_classifier, 'inception' or a checkpoint")
    device = model.device if model is not None else resolve_device(args.device)
    extractor = load_extractor(args.extractor, args.data, args.extractor_data, args.inception_weights).to(device)
    images, labels = _samples(args, model, options)
    record = image_record(
        images, labels, extractor, args.data, split=args.split, source=str(args.ckpt or args.samples),
        kid_subset_size=args.kid_subset_size, batch_size=args.batch_size, cache_dir=args.cache_dir,
        nll_model=model if isinstance(model, Likelihood) and not args.skip_nll else None,
    )  # fmt: skip
    _report(args, record)


def _score_anomalies(args, model) -> None:
    from genlit.commands.anomaly import anomaly_record, write_anomaly

    if model is None:
        raise ValueError("--anomaly needs --ckpt: the likelihood model (VAE, PixelCNN or flow) that scores the images")
    record, arrays = anomaly_record(
        model, args.anomaly, args.background, args.anomalous_classes, args.batch_size, str(args.ckpt)
    )
    write_anomaly(Path(args.out) if args.out else Path(args.anomaly).with_suffix(".scores.npz"), record, arrays)


def load_extractor(
    spec: str, data: str, extractor_data: str | None = None, inception_weights: str | None = None
) -> FeatureExtractor:
    """The extractor ``spec`` names; an evaluator config is trained on ``extractor_data`` (else ``data``), once."""
    return make_extractor(spec, inception_weights, _extractor_dataset(spec, data, extractor_data))


def image_record(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    extractor: FeatureExtractor,
    data: str,
    *,
    split: str = "test",
    source: str = "samples",
    kid_subset_size: int = 1000,
    batch_size: int = 500,
    cache_dir: str | Path | None = None,
    nll_model: Likelihood | None = None,
) -> dict:
    """What ``genlit evaluate`` prints and writes for uint8 images (N, C, H, W) against ``data``'s ``split``:
    ``source``, ``extractor`` (its identity), ``num_samples``, ``reference`` and ``metrics`` (with
    ``nll_model``'s test NLL figures when given)."""
    c, h, _ = images.shape[1:]  # the reference is decoded at the samples' size and channels
    reference = ImageDataModule(data, image_size=h, channels=c, batch_size=batch_size)
    cache = Path(cache_dir) if cache_dir else reference_cache()
    real_features, real_logits, _, key = reference_features(extractor, reference, split, cache)
    metrics = evaluate(images, labels, extractor, (real_features, real_logits), kid_subset_size)
    if nll_model is not None:
        metrics |= test_nll(nll_model, reference)
    return {
        "source": source,
        "extractor": extractor.identity,
        "num_samples": len(images),
        "reference": {"dataset": key["dataset"], "split": split, "num_images": len(real_features)},
        "metrics": metrics,
    }


def _extractor_dataset(spec: str, data: str, extractor_data: str | None) -> str | None:
    """The dataset an evaluator config is trained on (``extractor_data``, else ``data``), checked to exist; None
    for other extractors."""
    if not is_evaluator_spec(spec):
        return None
    option = "--extractor-data" if extractor_data else "--data"
    return resolve_dataset(extractor_data or data, option=option)


def _report(args, record: dict) -> None:
    out = Path(args.out) if args.out else Path(args.ckpt or args.samples).with_suffix(".eval.json")
    write_record(out, record)
    _print_table(record, out)


def _samples(args, model: Generative | None, options: dict):
    """(uint8 images (N, C, H, W), requested labels or None) drawn from ``model``, or read from --samples."""
    if model is None:
        return load_samples(args.samples)
    samples, labels = draw_as_asked(model, args, options)
    return drawn_images(samples, str(args.ckpt)), labels


def text_record(
    model: TextModel,
    data: str,
    split: str = "test",
    val_fraction: float = 0.1,
    batch_size: int = 500,
    source: str = "model",
) -> dict:
    """Loss, perplexity and bits per unit of a text split under a language model, and what was measured."""
    if model.tokenizer is None:
        raise ValueError(f"{source} stores no tokenizer; it was not trained with a genlit TextDataModule")
    block = model.hparams.block_size
    text = TextDataModule(data, block_size=block, val_fraction=val_fraction)
    tokens = torch.tensor(model.tokenizer.encode(text.split_text(split)), dtype=torch.long)  # (N,)
    if len(tokens) <= block:
        raise ValueError(f"the {split} split has {len(tokens)} tokens, fewer than one block of {block + 1}")
    blocks = TokenBlocks(tokens, block, stride=block)
    metrics = language_model_metrics(model, blocks, batch_size)
    return {
        "source": source,
        "tokenizer": f"{type(model.tokenizer).__name__} ({model.tokenizer.vocab_size} tokens)",
        "num_samples": len(blocks),
        "reference": {"dataset": data, "split": split, "num_tokens": len(blocks) * block},
        "metrics": metrics,
    }


@torch.no_grad()
def language_model_metrics(model: TextModel, blocks: TokenBlocks, batch_size: int) -> dict[str, float]:
    """``loss`` (nats per token), ``perplexity`` and ``bits_per_<unit>`` of every block of ``blocks``."""
    total_nats, total_tokens, total_units = 0.0, 0, 0.0
    for start in range(0, len(blocks), batch_size):
        x, y = blocks.__getitems__(list(range(start, min(start + batch_size, len(blocks)))))  # (B, T) each
        x, y = x.to(model.device), y.to(model.device)
        total_nats += model.token_nll(x, y).sum().item()
        total_tokens += y.numel()
        total_units += model.units_of(y).sum().item()
    loss = total_nats / total_tokens
    return {
        "loss": loss,
        "perplexity": float(np.exp(loss)),
        f"bits_per_{model.unit}": total_nats / np.log(2) / total_units,
    }


def write_record(out: Path, record: dict) -> None:
    """Write an evaluation record as JSON (atomically: never half-written)."""
    with atomic_write(out, "w") as handle:
        json.dump(record, handle, indent=2)


def _print_table(record: dict, out: Path) -> None:
    ref = record["reference"]
    if "tokenizer" in record:
        print(f"{record['source']}: {ref['num_tokens']} tokens ({record['num_samples']} blocks) of {ref['dataset']} "
              f"[{ref['split']}], tokenizer {record['tokenizer']}")  # fmt: skip
    else:
        print(f"{record['source']}: {record['num_samples']} samples against {ref['dataset']} [{ref['split']}] "
              f"({ref['num_images']} images), extractor {record['extractor']}")  # fmt: skip
    for name, value in record["metrics"].items():
        print(f"  {name:<18} {value:.4f}")
    print(f"wrote {out}")
