"""The results table: every image family's MNIST experiments trained for one CPU budget and evaluated alike.

    python -m benchmarks.quality [--budget 00:00:05:00] [--num 1000] [--experiments gan/dcgan_mnist ...] [--docs]

Each experiment is trained with ``genlit fit`` on the 9,000-image train split of ``$GENLIT_DATA_DIR/mnist``
for ``--budget`` of wall time (its YAML otherwise unchanged; run directories under
``runs/benchmarks/quality/``). Its last checkpoint (EMA weights where the family keeps them) then draws
``--num`` samples with its default sampler, which ``genlit evaluate``'s code scores against the 1,000-image
test split with genlit's MNIST evaluator (``evaluator:mnist_classifier``, trained once on the train split and
cached); VAE and diffusion models also run their test NLL. The table is printed and, with ``--docs``,
written into docs/results.md (the documentation's results page) between the ``quality-table`` markers.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import wandb

from genlit.checkpoints import load_family
from genlit.cli import GenlitCLI
from genlit.commands.evaluate import evaluate, reference_cache, reference_features, test_nll
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    "gan/dcgan_mnist", "gan/wgan_gp_mnist", "gan/sngan_hinge_mnist", "gan/stylegan_mnist",
    "vae/vae_mnist", "vae/beta_vae_mnist", "vae/cvae_mnist",
    "diffusion/ddpm_mnist", "diffusion/ddpm_cosine_v_mnist", "diffusion/cfg_mnist",
]  # fmt: skip
LIMITED_DATA = ["gan/stylegan_ada_mnist1k"]  # on demand: trained on 1,000 of the 9,000 images
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
COLUMNS = ["fid", "kid_mean", "precision", "recall", "class_coverage", "label_accuracy", "nll_bits_per_dim"]
START, END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"


def train(experiment: str, budget: str, mnist: str, extra: Sequence[str] = ()) -> tuple[Path, int]:
    """Fit ``experiment`` for ``budget`` (with the CLI overrides ``extra``); returns its last checkpoint and the
    optimizer steps taken."""
    config = str(REPO / "experiments" / f"{experiment}.yaml")
    root = str(REPO / "runs" / "benchmarks" / "quality" / experiment)
    limits = ["--trainer.max_time", budget, "--trainer.max_steps", "-1", "--trainer.max_epochs", "-1"]
    args = ["fit", "--config", config, "--data.dataset", mnist, *QUIET, "--trainer.default_root_dir", root, *limits]
    fit = GenlitCLI([*args, *extra])
    wandb.finish()
    return Path(fit.trainer.checkpoint_callback.last_model_path), fit.trainer.global_step


def score(ckpt: Path, num: int, extractor, reference, data: ImageDataModule) -> dict[str, float]:
    """Samples of the checkpoint scored against the reference; plus the family's test NLL, if it has one."""
    model = load_family(ckpt).eval()
    with torch.no_grad():
        samples, labels = draw(model, num, seed=0, batch_size=250)
    images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    metrics = evaluate(images, labels, extractor, reference, kid_subset_size=min(1000, num))
    return metrics | test_nll(model, data)


def table(rows: list[dict], budget: str, num: int, identity: str) -> str:
    """The markdown results table with its measurement conditions."""
    lines = [
        f"Budget {budget} of training per experiment on the project's 2-core CPU machine; {num} samples from the "
        f"last checkpoint against the 1,000 MNIST test images; extractor `{identity}`.",
        "",
        "| family | experiment | steps | " + " | ".join(COLUMNS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in rows:
        values = [f"{row[c]:.4g}" if c in row else "-" for c in COLUMNS]
        lines.append(f"| {row['family']} | {row['experiment']} | {row['steps']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_results_page(text: str) -> None:
    """Replace the table between the markers in docs/results.md."""
    path = REPO / "docs" / "results.md"
    readme = path.read_text()
    if START not in readme or END not in readme:
        raise ValueError(f"{path} lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    path.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    """Train, sample, evaluate every experiment; print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="00:00:05:00", help="training wall time per experiment (DD:HH:MM:SS)")
    parser.add_argument("--num", type=int, default=1000, help="samples per experiment")
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS, choices=[*EXPERIMENTS, *LIMITED_DATA])
    parser.add_argument("--docs", "--readme", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    data = ImageDataModule(mnist)
    reference = reference_features(extractor, data, "test", reference_cache())[:2]
    rows = []
    for experiment in args.experiments:
        start = time.perf_counter()
        ckpt, steps = train(experiment, args.budget, mnist)
        row = {"family": experiment.split("/")[0], "experiment": experiment.split("/")[1], "steps": steps}
        rows.append(row | score(ckpt, args.num, extractor, reference, data))
        print(f"{experiment}: {time.perf_counter() - start:.0f} s in all; " + str(rows[-1]), flush=True)
    text = table(rows, args.budget, args.num, extractor.identity)
    print(text)
    if args.docs:
        write_results_page(text)


if __name__ == "__main__":
    main()
