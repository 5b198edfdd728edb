"""Does the loader keep up? Images/s each ``storage`` of ImageDataModule delivers, against the images/s the
DCGAN and U-Net training steps consume, measured in one run on this machine.

    python -m benchmarks.image_loading [--batches 60] [--batch-size 64] [--workers 0 2] [--sizes 28 64]

For each image size and worker count, the train loader of the offline MNIST copy (``$GENLIT_DATA_DIR/mnist``)
is iterated for ``--batches`` batches after 5 warm-up batches: ``memory`` (decoded once, in RAM), ``disk``
(memory-mapped Arrow, PNG decoded per batch in the workers) and ``stream`` (``datasets`` streaming, decoded
per example in the workers). Size 64 resizes MNIST to 64x64 RGB, a CelebA-64-like decode and resize cost.
The consumers are the hand-written DCGAN (D + G step) and DDPM U-Net loops of the throughput benchmarks at
28 px, batch 64: their steps/s times the batch size.
"""

from __future__ import annotations

import argparse
import os
import time

import datasets

from benchmarks.args import positive_int
from benchmarks.diffusion_throughput import plain_loop as unet_loop
from benchmarks.gan_throughput import plain_loop as dcgan_loop
from benchmarks.timing import mnist_data
from genlit.data.images import ImageDataModule

STORAGES = ("memory", "disk", "stream")


def loader_rate(storage: str, size: int, workers: int, batches: int, batch_size: int) -> float:
    """Images/s the train loader yields over ``batches`` batches after 5 warm-up ones (setup excluded)."""
    channels = 1 if size == 28 else 3
    dm = ImageDataModule(
        os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist"),
        image_size=size, channels=channels, batch_size=batch_size, num_workers=workers, storage=storage,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    for _ in range(5):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    """Print the loaders' and the models' images/s."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=positive_int, default=60)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    args = parser.parse_args()
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0  # the benchmark abandons streams mid-way: skip the 5 s wait

    _, images = mnist_data(args.batch_size)
    consumers = {
        "DCGAN step (D + G)": dcgan_loop(images, 60, 10, args.batch_size, freeze_d=True) * args.batch_size,
        "DDPM U-Net step": unet_loop(images, 20, 3, args.batch_size) * args.batch_size,
    }
    for name, rate in consumers.items():
        print(f"{name:>22}: {rate:8.0f} images/s consumed (28 px, batch {args.batch_size})")
    for size in args.sizes:
        for workers in args.workers:
            for storage in STORAGES:
                rate = loader_rate(storage, size, workers, args.batches, args.batch_size)
                verdict = ", ".join(f"{rate / r:.1f}x {n.split()[0]}" for n, r in consumers.items())
                print(f"{storage:>8} {size:>3} px, {workers} workers: {rate:8.0f} images/s  ({verdict})")


if __name__ == "__main__":
    main()
