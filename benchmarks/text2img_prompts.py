"""Does a text-to-image checkpoint (``diffusion/text2img_mnist``) draw the digit its prompt names? Judged by genlit's
MNIST evaluator, for captions in the training templates and in the held-out ones, at several guidance scales.

    python -m benchmarks.text2img_prompts --ckpt runs/diffusion/text2img_mnist/<run>/checkpoints/last.ckpt \
        [--num 500] [--guidance 1 2 4] [--sampler DDIM-50] [--extractor evaluator:mnist_classifier] [--out-dir DIR]

For each template set (``train``: :data:`~genlit.data.captions.TRAIN_TEMPLATES`, ``held_out``:
:data:`~genlit.data.captions.HELD_OUT_TEMPLATES`, which training never sees) and each guidance scale, ``--num``
prompts balanced over the ten digits (sample i names digit ``i % 10``, in template ``(i // 10) % T`` of the set, its
operands and distractor words drawn from (i, set)) are sampled from the same noise in every setting (seed 0, sample
i's noise depends only on i). Prints one line per setting: the **accuracy** (the share of samples the evaluator
classifies as the prompted digit: the ``label_accuracy`` of :func:`genlit.commands.evaluate.evaluate` with the
prompted digits as labels), FID, KID, precision, recall and class coverage against the test split of
``$GENLIT_DATA_DIR/mnist`` (as :mod:`benchmarks.diffusion_samplers`), and the seconds sampling took; then the best
guidance by held-out accuracy (target: >= 95%). Under each line, the accuracy of each template of the set (the
held-out ``{times}`` names an operation no training caption uses). A PNG grid per setting (row d: the first
samples prompted with digit d) goes beside the checkpoint (``last.prompts_held_out_g4.png``) or under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import torch

from benchmarks.args import positive_int
from benchmarks.diffusion_samplers import parse_sampler
from genlit.checkpoints import load_family
from genlit.commands.evaluate import evaluate, extract, reference_cache, reference_features
from genlit.commands.sample import draw
from genlit.data.captions import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, fill_template
from genlit.data.images import ImageDataModule
from genlit.families.text_to_image import TextDiffusion
from genlit.imaging import image_grid, save_png, to_uint8
from genlit.metrics.extractors import make_extractor

TEMPLATE_SETS = {"train": TRAIN_TEMPLATES, "held_out": HELD_OUT_TEMPLATES}
TARGET = 0.95  # held-out accuracy at the best guidance
GRID_COLUMNS = 10


def template_prompts(num: int, held_out: bool, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """``num`` captions balanced over the ten digits (sample i: digit ``i % 10``, template ``(i // 10) % T`` of the
    set, so each digit cycles through every template) and their digits (num,) int64; deterministic in (i, seed)."""
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    digits = torch.arange(num) % 10
    prompts = []
    for i in range(num):
        rng = random.Random(f"{seed}:{i}:text2img_prompts:{'held_out' if held_out else 'train'}")
        prompts.append(fill_template(templates[(i // 10) % len(templates)], int(digits[i]), rng, held_out))
    return prompts, digits


def digit_rows(samples: torch.Tensor, digits: torch.Tensor, columns: int = GRID_COLUMNS) -> torch.Tensor:
    """The first ``columns`` samples (N, C, H, W) of each digit, digit 0's first: (10 * n, C, H, W) with n the
    fewest samples of a digit (capped at ``columns``), for a grid of one row per digit."""
    per_digit = min(columns, *(int((digits == d).sum()) for d in range(10)))
    return torch.cat([samples[digits == d][:per_digit] for d in range(10)])


def grid_path(ckpt: str, out_dir: str | None, template_set: str, guidance: float) -> Path:
    """Where the grid of one setting goes: ``<ckpt stem>.prompts_<set>_g<scale>.png`` beside the checkpoint, or
    ``prompts_<set>_g<scale>.png`` under ``out_dir``."""
    name = f"prompts_{template_set}_g{guidance:g}.png"
    return Path(out_dir) / name if out_dir else Path(ckpt).with_name(f"{Path(ckpt).stem}.{name}")


@torch.no_grad()
def measure(model, prompts, digits, guidance, sampler, extractor, reference, batch_size, grid: Path,
            num_templates: int = 1) -> dict:  # fmt: skip
    """Sample ``prompts`` (seed 0) at ``guidance``, save the grid, and evaluate: ``accuracy`` (the share classified
    as the prompted ``digits``), the other figures of :func:`~genlit.commands.evaluate.evaluate` but IS,
    ``seconds`` (the sampling) and ``per_template`` (the accuracy of each of ``num_templates`` templates)."""
    start = time.perf_counter()
    samples, _ = draw(model, len(prompts), seed=0, batch_size=batch_size, prompt=prompts, sampler=sampler,
                      guidance_scale=guidance)  # fmt: skip
    seconds = time.perf_counter() - start
    save_png(image_grid(to_uint8(digit_rows(samples, digits)), nrow=min(GRID_COLUMNS, len(prompts) // 10)), grid)
    images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    metrics = evaluate(images, digits, extractor, reference, kid_subset_size=min(500, len(images)))
    shown = {k: v for k, v in metrics.items() if k != "label_accuracy" and not k.startswith("is_")}
    per_template = template_accuracy(images, digits, num_templates, extractor)
    return {"accuracy": metrics["label_accuracy"]} | shown | {"seconds": seconds, "per_template": per_template}


@torch.no_grad()
def template_accuracy(samples_uint8: torch.Tensor, digits: torch.Tensor, num_templates: int, extractor) -> list:
    """The share of samples classified as their prompted digit, per template (sample i: template (i // 10) % T)."""
    _, logits = extract(extractor, samples_uint8)
    correct = (logits.argmax(dim=1).cpu() == digits).float()  # (N,)
    template = (torch.arange(len(digits)) // 10) % num_templates  # (N,)
    return [correct[template == t].mean().item() for t in range(num_templates)]


def main(argv: list[str] | None = None) -> dict[tuple[str, float], dict[str, float]]:
    """Sample every (template set, guidance) setting, evaluate, print the table; returns the metrics by setting."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a TextDiffusion checkpoint (diffusion/text2img_mnist)")
    parser.add_argument("--num", type=positive_int, default=500, help="samples per setting (balanced over digits)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="classifier-free "
                        "guidance scales on the text")  # fmt: skip
    parser.add_argument("--sampler", default="DDIM-50", help="e.g. DDIM-50, DDPM-1000, DPM-20 "
                        "(names as in benchmarks.diffusion_samplers)")  # fmt: skip
    parser.add_argument("--extractor", default="evaluator:mnist_classifier", help="evaluator:NAME (trained on the "
                        "MNIST train split once, cached), a classifier checkpoint or its run root")  # fmt: skip
    parser.add_argument("--split", default="test", help="the reference split of $GENLIT_DATA_DIR/mnist")
    parser.add_argument("--batch-size", type=positive_int, default=250)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", default=None, help="the grids' folder (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    try:
        sampler = parse_sampler(args.sampler)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if args.num < 10:
        parser.error(f"--num must be >= 10 (the prompts are balanced over the ten digits), got {args.num}")
    model = load_family(args.ckpt).eval()
    if not isinstance(model, TextDiffusion):
        parser.error(f"--ckpt {args.ckpt} holds a {type(model).__name__}; this benchmark needs a TextDiffusion")
    model = model.to(args.device)
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor(args.extractor, dataset=mnist).to(args.device)
    reference = reference_features(extractor, ImageDataModule(mnist), args.split, reference_cache())[:2]
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    print(f"{args.ckpt}: {args.num} samples per setting ({args.sampler}, seed 0) against mnist [{args.split}], "
          f"extractor {extractor.identity}", flush=True)  # fmt: skip
    results = {}
    for template_set in TEMPLATE_SETS:
        prompts, digits = template_prompts(args.num, held_out=template_set == "held_out")
        for guidance in args.guidance:
            grid = grid_path(args.ckpt, args.out_dir, template_set, guidance)
            templates = TEMPLATE_SETS[template_set]
            metrics = measure(model, prompts, digits, guidance, sampler, extractor, reference, args.batch_size, grid,
                              len(templates))  # fmt: skip
            results[(template_set, guidance)] = metrics
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("accuracy", "seconds",
                                                                                        "per_template"))  # fmt: skip
            print(f"  {template_set:<8} guidance {guidance:<4g} accuracy {metrics['accuracy']:.4f}  {shown}  "
                  f"{metrics['seconds']:6.1f} s", flush=True)  # fmt: skip
            per_template = ", ".join(f"{t!r} {a:.2f}" for t, a in zip(templates, metrics["per_template"], strict=True))
            print(f"    per template: {per_template}", flush=True)
    best = max(args.guidance, key=lambda g: results[("held_out", g)]["accuracy"])
    held_out, train = results[("held_out", best)], results[("train", best)]
    verdict = "met" if held_out["accuracy"] >= TARGET else "not met"
    print(f"best guidance by held-out accuracy: {best:g} (held-out accuracy {held_out['accuracy']:.4f}, train "
          f"{train['accuracy']:.4f}, held-out FID {held_out['fid']:.4f}; target >= {TARGET:.0%} {verdict}); grids in "
          f"{grid_path(args.ckpt, args.out_dir, 'held_out', best).parent}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
