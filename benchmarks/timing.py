"""Shared pieces of the throughput benchmarks: a Lightning batch timer and alternating repeats."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch

from benchmarks.args import positive_int
from benchmarks.plain_gpt import BLOCK, shakespeare_path
from genlit.callbacks.progress import ThrottledProgressBar
from genlit.data.images import ImageDataModule
from genlit.data.text import TextDataModule


class BatchTimer(L.Callback):
    """Wall time from the end of batch ``warmup`` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.batches, self.start, self.end = warmup, 0, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()

    def rate(self, steps: int) -> float:
        """Steps per second over the timed part."""
        return steps / (self.end - self.start)


def quiet_trainer(max_steps: int, timer: BatchTimer, progress_bar: bool, **trainer_args) -> L.Trainer:
    """A CPU Trainer without logger, checkpoints or validation, as a throughput comparison needs; with a
    progress bar, genlit's default one (what ``genlit fit`` shows)."""
    callbacks = [timer, ThrottledProgressBar()] if progress_bar else [timer]
    return L.Trainer(
        max_steps=max_steps, logger=False, enable_checkpointing=False, limit_val_batches=0, accelerator="cpu",
        enable_model_summary=False, enable_progress_bar=progress_bar, callbacks=callbacks, **trainer_args,
    )  # fmt: skip


def fit_rate(model, data, steps: int, warmup: int, progress_bar: bool, optimizer_steps_per_batch: int = 1) -> float:
    """Fit ``model`` on ``data`` in a :func:`quiet_trainer` for ``warmup + steps`` batches; training batches/s after
    ``warmup`` (``optimizer_steps_per_batch`` 2 for a GAN's D + G steps)."""
    timer = BatchTimer(warmup)
    quiet_trainer(optimizer_steps_per_batch * (warmup + steps), timer, progress_bar).fit(model, datamodule=data)
    return timer.rate(steps)


def alternate(loops: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every loop once per repeat, in turn (so slow phases of a noisy machine hit all of them);
    print each repeat and the medians, and return every loop's steps/s per repeat."""
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(repeats):
        for name, loop in loops.items():
            torch.manual_seed(r)
            runs[name].append(loop())
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()) + " steps/s")
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print("median steps/s: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    return runs


def report_ratio(runs: dict[str, list[float]], num: str, den: str, note: str = "") -> float:
    """Print and return the median over repeats of the paired ratio ``num / den`` (robust to a slow phase
    of the machine hitting one repeat), with the ratio of medians beside it."""
    paired = statistics.median(a / b for a, b in zip(runs[num], runs[den], strict=True))
    of_medians = statistics.median(runs[num]) / statistics.median(runs[den])
    print(f"ratio {num}/{den}{note}: {paired:.3f} (median of per-repeat ratios; ratio of medians {of_medians:.3f})")
    return paired


def throughput_parser(doc: str, batch_size: int, steps: int = 300, warmup: int = 30) -> argparse.ArgumentParser:
    """A parser of the command-line options every throughput benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--steps", type=positive_int, default=steps)
    parser.add_argument("--warmup", type=positive_int, default=warmup)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser


def throughput_args(doc: str, batch_size: int, steps: int = 300, warmup: int = 30) -> argparse.Namespace:
    """The command-line options every throughput benchmark takes, parsed."""
    return throughput_parser(doc, batch_size, steps, warmup).parse_args()


def shakespeare_data(batch_size: int) -> TextDataModule:
    """The character-level Tiny Shakespeare DataModule of the GPT benchmarks (context ``BLOCK``), set up."""
    data = TextDataModule(str(shakespeare_path()), tokenizer="char", block_size=BLOCK, batch_size=batch_size)
    data.prepare_data()
    data.setup("fit")
    return data


def mnist_data(batch_size: int) -> tuple[ImageDataModule, torch.Tensor]:
    """The offline MNIST DataModule, set up, and its decoded uint8 train images (N, 1, 28, 28) for plain loops."""
    data = ImageDataModule(os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist"), batch_size=batch_size)
    data.prepare_data()
    data.setup("fit")
    print(f"batch {batch_size}")
    return data, data.train_dataloader().dataset.tensors[0]


def compare_with_plain_loop(
    doc: str, plain_loop, genlit_loop, batch_size: int, steps: int = 300, warmup: int = 30, args=None
):
    """The main of a throughput benchmark: parse the options (unless ``args`` holds them, parsed by a
    :func:`throughput_parser` with more options), alternate ``plain_loop(images, steps, warmup, batch_size)`` and
    ``genlit_loop(data, steps, warmup, progress_bar)`` on MNIST, print the ratio."""
    args = args if args is not None else throughput_args(doc, batch_size, steps, warmup)
    data, images = mnist_data(args.batch_size)
    loops = {
        "plain": lambda: plain_loop(images, args.steps, args.warmup, args.batch_size),
        "genlit": lambda: genlit_loop(data, args.steps, args.warmup, not args.no_progress_bar),
    }
    return report_ratio(alternate(loops, args.repeats), "genlit", "plain")
