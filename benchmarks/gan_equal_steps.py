"""The GAN experiments side by side at equal generator steps, scored alike.

    python -m benchmarks.gan_equal_steps [--generator-steps 10000] [--num 1000]
        [--experiments gan/dcgan_mnist gan/wgan_gp_mnist ...] [--set "gan/wgan_gp_mnist=--model.n_critic 2 ..."]

Each experiment is trained with ``genlit fit`` (its YAML as written: validation, monitors, checkpoints) on the
9,000-image train split of ``$GENLIT_DATA_DIR/mnist`` until it has made ``--generator-steps`` generator steps
(``max_steps`` = generator steps x (n_critic + 1), since Lightning counts D and G steps alike), then its last
checkpoint (EMA generator where it keeps one) draws ``--num`` samples scored by genlit's MNIST evaluator against
the 1,000 test images: FID, precision/recall, class coverage, label accuracy (conditional models). Printed: one
row per experiment with its wall time and its FID as a multiple of the first experiment's (the baseline,
``dcgan_mnist`` by default). ``--set "EXPERIMENT=ARGS"`` adds CLI overrides to one experiment (a recipe tried).
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

import torch
import wandb
import yaml

from benchmarks.args import positive_int
from benchmarks.quality import QUIET, REPO, score
from genlit.cli import GenlitCLI
from genlit.commands.evaluate import reference_cache, reference_features
from genlit.data.images import ImageDataModule
from genlit.metrics.extractors import make_extractor

DEFAULT = ["gan/dcgan_mnist", "gan/wgan_gp_mnist", "gan/sngan_hinge_mnist", "gan/stylegan_mnist"]


def n_critic_of(experiment: str, extra: list[str]) -> int:
    """The experiment's discriminator steps per generator step (its YAML, or an override among ``extra``)."""
    if "--model.n_critic" in extra:
        return int(extra[extra.index("--model.n_critic") + 1])
    config = yaml.safe_load((REPO / "experiments" / f"{experiment}.yaml").read_text())
    return int(config["model"]["init_args"].get("n_critic", 1))


def train(experiment: str, generator_steps: int, mnist: str, extra: list[str]) -> tuple[Path, int, float]:
    """Fit ``experiment`` for ``generator_steps``; returns its last checkpoint, generator steps and wall seconds."""
    config = str(REPO / "experiments" / f"{experiment}.yaml")
    root = str(REPO / "runs" / "benchmarks" / "equal_steps" / experiment)
    max_steps = generator_steps * (n_critic_of(experiment, extra) + 1)
    args = ["fit", "--config", config, "--data.dataset", mnist, *QUIET, "--trainer.default_root_dir", root,
            "--trainer.max_steps", str(max_steps), "--trainer.max_epochs", "-1", *extra]  # fmt: skip
    start = time.perf_counter()
    fit = GenlitCLI(args)
    wall = time.perf_counter() - start
    wandb.finish()
    fit.trainer.save_checkpoint(Path(root) / "final.ckpt")  # last.ckpt lags when max_steps stops mid-epoch
    return Path(root) / "final.ckpt", int(fit.model.generator_steps), wall


def overrides(settings: list[str] | None) -> dict[str, list[str]]:
    """``--set "EXPERIMENT=ARGS"`` values as {experiment: args}."""
    pairs = [setting.partition("=") for setting in settings or []]
    return {name: shlex.split(args) for name, _, args in pairs}


def main() -> None:
    """Train every experiment to the same generator steps, score each, print the rows and FID ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator-steps", type=positive_int, default=10000)
    parser.add_argument("--num", type=positive_int, default=1000, help="samples per experiment")
    parser.add_argument("--experiments", nargs="+", default=DEFAULT)
    parser.add_argument("--set", action="append", metavar="EXPERIMENT=ARGS", help="CLI overrides of one experiment")
    args = parser.parse_args()
    extra = overrides(args.set)
    unknown = sorted(set(extra) - set(args.experiments))
    if unknown:
        parser.error(f"--set names {unknown}, which are not among --experiments (write EXPERIMENT=ARGS)")
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    data = ImageDataModule(mnist)
    reference = reference_features(extractor, data, "test", reference_cache())[:2]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.generator_steps} generator steps")
    baseline = None
    for experiment in args.experiments:
        ckpt, steps, wall = train(experiment, args.generator_steps, mnist, extra.get(experiment, []))
        row = score(ckpt, args.num, extractor, reference, data)
        baseline = baseline or row["fid"]
        values = ", ".join(f"{k} {v:.4g}" for k, v in row.items())
        print(f"{experiment} {' '.join(extra.get(experiment, []))}: {steps} generator steps in {wall:.0f} s; "
              f"{values}; FID / {args.experiments[0]}'s: {row['fid'] / baseline:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
