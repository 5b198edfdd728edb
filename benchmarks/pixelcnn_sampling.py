"""Samples/s of PixelCNN sampling with each cache (none, rows, stacks), on one model, in one run.

    python -m benchmarks.pixelcnn_sampling [--config experiments/pixelcnn/pixelcnn_mnist_binary.yaml | --ckpt PATH]
        [--num 8] [--repeats 3] [--caches none rows stacks]

The model is a checkpoint's, or the experiment's (its net with fresh random weights: the work per sample does not
depend on the weights). Every cache draws the same ``--num`` samples (seed 0) in one batch, in turn within each
repeat (so slow phases of a noisy machine hit all of them); prints each repeat, the median samples/s of each cache,
its speed-up over ``none`` (the whole net on the whole image for every sub-pixel), the net evaluations per batch
(C x H x W pixel steps) and whether every cache drew exactly the same samples. The experiment's data (for its shape
and classes) is ``$GENLIT_DATA_DIR/mnist``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.args import positive_int
from genlit.checkpoints import load_family
from genlit.cli import GenlitCLI
from genlit.families.pixelcnn import SAMPLING_CACHES, PixelCNN
from genlit.seeding import SampleRNG

DEFAULT_CONFIG = "experiments/pixelcnn/pixelcnn_mnist_binary.yaml"


def load_model(config: str, ckpt: str | None) -> PixelCNN:
    """The checkpoint's model, else the experiment's (shape and classes linked from its DataModule)."""
    if ckpt is not None:
        return load_family(ckpt).eval()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    cli = GenlitCLI(args=["--config", config, "--data.init_args.dataset", mnist], run=False)
    return cli.model.eval()


def draw_seconds(model: PixelCNN, num: int, cache: str) -> tuple[float, torch.Tensor]:
    """Seconds to draw samples 0..num-1 (seed 0) in one batch with ``cache``, and the samples."""
    start = time.perf_counter()
    samples = model.sample(num, generator=SampleRNG(range(num), 0, model.device), cache=cache)
    return time.perf_counter() - start, samples


def main() -> None:
    """Time every cache, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="an experiment whose net is timed")
    parser.add_argument("--ckpt", default=None, help="a PixelCNN checkpoint instead of the experiment's fresh net")
    parser.add_argument("--num", type=positive_int, default=8, help="samples per batch")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--caches", nargs="+", choices=SAMPLING_CACHES, default=list(SAMPLING_CACHES))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.config, args.ckpt)
    c, h, w = model.data_shape
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {args.ckpt or args.config}: "
          f"{c}x{h}x{w}, {c * h * w} pixel steps per batch of {args.num}")  # fmt: skip
    rates: dict[str, list[float]] = {cache: [] for cache in args.caches}
    drawn: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for cache in args.caches:
            seconds, drawn[cache] = draw_seconds(model, args.num, cache)
            rates[cache].append(args.num / seconds)
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rates.items()) + " samples/s")
    medians = {cache: statistics.median(values) for cache, values in rates.items()}
    base = medians.get("none")
    for cache, rate in medians.items():
        speedup = f", {rate / base:.1f}x none" if base else ""
        print(f"{cache:>7}: {rate:.3f} samples/s ({args.num / rate:.1f} s per batch of {args.num}{speedup})")
    first = next(iter(drawn.values()))
    print(f"same samples with every cache: {all(torch.equal(first, s) for s in drawn.values())}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
