"""Quality figures of the GAN experiments, measured through the ``genlit`` command as a user runs it.

    python -m benchmarks.gan_quality toy_ring8                   # whole `genlit fit` run, timed
    python -m benchmarks.gan_quality toy_grid25
    python -m benchmarks.gan_quality dcgan_mnist --max-time 00:00:10:00

Toy mixtures: wall time of the whole run, then modes covered and the share of high-quality samples
(within 3 std of a mode) of 2,500 samples from the EMA generator (the papers' protocol).
MNIST (``$GENLIT_DATA_DIR/mnist``): optimizer and generator steps done in the time budget, and the path of
a 100-sample grid drawn by ``genlit sample`` to look at (a learned-classifier score comes with the
evaluation suite).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from genlit.checkpoints import load_family
from genlit.data.toy import DEFAULT_STD, toy_centers
from genlit.metrics.toy import mode_statistics

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "gan"
TOY = {"toy_ring8": "ring8", "toy_grid25": "grid25"}


def run_fit(experiment: str, root: Path, extra: list[str]) -> tuple[float, Path]:
    """``genlit fit`` in a subprocess; returns (wall seconds, run directory)."""
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / f"{experiment}.yaml")]
    command += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (run_dir,) = root.iterdir()
    return wall, run_dir


def toy_figures(experiment: str, run_dir: Path) -> str:
    """Mode statistics of 2,500 EMA samples of the final checkpoint."""
    model = load_family(run_dir / "checkpoints" / "last.ckpt").eval()
    name = TOY[experiment]
    samples = model.sample_many(range(2500), seed=0)
    stats = mode_statistics(samples, toy_centers(name), DEFAULT_STD[name])
    modes = len(toy_centers(name))
    return (
        f"modes covered {stats['modes_covered']}/{modes}, high-quality samples "
        f"{100 * stats['high_quality_fraction']:.1f}%, KL(mode histogram || uniform) {stats['kl_mode_histogram']:.4f}"
    )


def mnist_figures(run_dir: Path, out_dir: Path) -> str:
    """Steps done and a sample grid from the final checkpoint."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    out = out_dir / "dcgan_mnist_samples.npz"
    command = [sys.executable, "-m", "genlit.cli", "sample", "--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    subprocess.run([*command, "--num", "100", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    g_steps = int(ckpt["state_dict"]["_generator_steps"])
    return f"optimizer steps {ckpt['global_step']} ({g_steps} generator steps); sample grid {out.with_suffix('.png')}"


def main() -> None:
    """Run one experiment and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=[*TOY, "dcgan_mnist"])
    parser.add_argument("--max-time", default="00:00:10:00", help="time budget of the MNIST run (DD:HH:MM:SS)")
    parser.add_argument("--out", default=".", help="where the MNIST sample grid goes")
    args = parser.parse_args()
    extra = []
    if args.experiment == "dcgan_mnist":
        mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
        extra = ["--data.dataset", mnist, "--trainer.max_time", args.max_time, "--trainer.max_steps", "-1"]
    with tempfile.TemporaryDirectory() as root:
        wall, run_dir = run_fit(args.experiment, Path(root), extra)
        print(f"{args.experiment}: whole `genlit fit` run {wall:.1f} s wall, torch threads {torch.get_num_threads()}")
        if args.experiment in TOY:
            print(toy_figures(args.experiment, run_dir))
        else:
            print(mnist_figures(run_dir, Path(args.out).resolve()))


if __name__ == "__main__":
    main()
