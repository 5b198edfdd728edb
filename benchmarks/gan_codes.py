"""How well ACGAN's classes and InfoGAN's categorical code come out, judged by genlit's MNIST evaluator.

    python -m benchmarks.gan_codes [--experiments gan/infogan_mnist gan/acgan_mnist] [--budget 00:00:18:00]
                                   [--num 1000] [--out DIR] [--args "CLI OVERRIDES"]

Each experiment is trained with ``genlit fit`` on the 9,000-image train split of ``$GENLIT_DATA_DIR/mnist`` for
``--budget`` of wall time (its YAML otherwise unchanged, as :mod:`benchmarks.quality` does); its last checkpoint (EMA
generator) then draws ``--num`` samples scored by the evaluator (``evaluator:mnist_classifier``) against the 1,000
test images: FID, precision, recall and class coverage as in the results table, and

- InfoGAN: **cluster accuracy** of the categorical code. ``--num`` samples, an equal share per code value (the
  continuous codes and the noise random), are labelled by the evaluator; the best one-to-one map of code values to
  digits (:func:`scipy.optimize.linear_sum_assignment` on the code x digit counts) scores the share of samples
  whose digit is their code's (the InfoGAN paper's 5% error on MNIST: 95%). FID and coverage on free samples.
- ACGAN: **label accuracy**, the share of samples (balanced over the ten requested classes) that the evaluator
  labels as requested.

Run directories under ``runs/benchmarks/quality/``; pictures under ``--out`` (default
``runs/benchmarks/gan_codes``): one row per code value or class (10 samples each), and for InfoGAN one picture per
continuous code (row: the categorical code's value; columns: that continuous code from -2 to 2, the other at 0,
the noise of sample 0), as the paper's figure 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from benchmarks.quality import REPO, train
from genlit.checkpoints import load_family
from genlit.commands.evaluate import evaluate, reference_cache, reference_features
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.families.infogan import InfoGAN
from genlit.imaging import image_grid, save_png, to_uint8
from genlit.metrics.extractors import make_extractor
from genlit.metrics.features import extract

EXPERIMENTS = ["gan/infogan_mnist", "gan/acgan_mnist"]
TRAVERSAL = torch.linspace(-2, 2, 10).tolist()  # the paper's figure 2 goes beyond the training range [-1, 1]


def cluster_accuracy(codes: np.ndarray, digits: np.ndarray, k: int = 10) -> tuple[float, dict[int, int]]:
    """The share of samples whose digit is their code's under the best one-to-one map of codes to digits, and
    that map (code -> digit)."""
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (codes, digits), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(codes)), {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def evaluator_digits(extractor, samples: torch.Tensor) -> np.ndarray:
    """The evaluator's digit (argmax) of each image (N, C, H, W) in [-1, 1]."""
    _, logits = extract(extractor, to_uint8(samples).permute(0, 3, 1, 2).contiguous())
    return logits.argmax(1).cpu().numpy()


def infogan_figures(model, num: int, extractor, out: Path) -> dict:
    """Cluster accuracy of the categorical code (``num`` samples, an equal share per code value) and the pictures."""
    k = model.layout.num_categories
    per_code = num // k
    samples = [model.sample_many(range(per_code), seed=0, category=c) for c in range(k)]  # k x (per_code, C, H, W)
    codes = np.repeat(np.arange(k), per_code)
    accuracy, mapping = cluster_accuracy(codes, evaluator_digits(extractor, torch.cat(samples)), k)
    save_png(image_grid(to_uint8(torch.cat([s[:10] for s in samples])), nrow=10), out / "infogan_categories.png")
    for index in range(model.layout.num_continuous):
        rows = []
        for c in range(k):
            values = [[v if i == index else 0.0 for i in range(model.layout.num_continuous)] for v in TRAVERSAL]
            rows += [model.sample_many([0], seed=0, category=c, continuous=v) for v in values]
        save_png(image_grid(to_uint8(torch.cat(rows)), nrow=len(TRAVERSAL)), out / f"infogan_continuous_{index}.png")
    return {"cluster_accuracy": accuracy, "code_to_digit": mapping}


def acgan_figures(model, out: Path) -> dict:
    """The picture: one row per class."""
    labels = torch.arange(10).repeat_interleave(10)
    samples = model.sample_many(range(100), seed=0, labels=labels)
    save_png(image_grid(to_uint8(samples), nrow=10), out / "acgan_classes.png")
    return {}


def score(ckpt: Path, num: int, extractor, reference, out: Path) -> dict:
    """Quality of free samples (balanced labels for ACGAN) and the family's own figures."""
    model = load_family(ckpt).eval()
    with torch.no_grad():
        samples, labels = draw(model, num, seed=0, batch_size=250)
        images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
        metrics = evaluate(images, labels, extractor, reference, kid_subset_size=min(1000, num))
        own = infogan_figures(model, num, extractor, out) if isinstance(model, InfoGAN) else acgan_figures(model, out)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    steps = {"optimizer_steps": checkpoint["global_step"], "generator_steps": int(model.generator_steps)}
    return steps | metrics | own


def main() -> None:
    """Train, sample, evaluate each experiment; print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS, choices=EXPERIMENTS)
    parser.add_argument("--budget", default="00:00:18:00", help="training wall time per experiment (DD:HH:MM:SS)")
    parser.add_argument("--num", type=int, default=1000, help="samples per figure")
    parser.add_argument("--out", default=str(REPO / "runs" / "benchmarks" / "gan_codes"), help="the pictures' folder")
    parser.add_argument("--args", default="", help='CLI overrides for every experiment (a recipe tried), e.g. '
                        '"--model.init_args.categorical_weight 2"')  # fmt: skip
    args = parser.parse_args()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    reference = reference_features(extractor, ImageDataModule(mnist), "test", reference_cache())[:2]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for experiment in args.experiments:
        start = time.perf_counter()
        ckpt, _ = train(experiment, args.budget, mnist, shlex.split(args.args))
        wall = time.perf_counter() - start
        figures = score(ckpt, args.num, extractor, reference, out)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        threads = torch.get_num_threads()
        print(f"{experiment} {args.args}: training {wall:.0f} s wall on {threads} threads; {shown}", flush=True)


if __name__ == "__main__":
    main()
