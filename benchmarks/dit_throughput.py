"""Training steps/s of genlit's diffusion family with the DiT backbone against a hand-written PyTorch loop.

The DiT of experiments/diffusion/dit_mnist.yaml (2x2 patches, width 96, 4 blocks, 4 heads), batch, Adam, linear
schedule, eps target and EMA of the weights, on the offline MNIST copy (``$GENLIT_DATA_DIR/mnist``): the loop of
:mod:`benchmarks.diffusion_throughput` with this net. The loops alternate and the median of the per-repeat ratios
is printed.

    python -m benchmarks.dit_throughput [--steps 50] [--warmup 5] [--repeats 5] [--batch-size 64]
"""

from __future__ import annotations

from functools import partial

from benchmarks import diffusion_throughput
from benchmarks.timing import compare_with_plain_loop
from genlit.nets.dit import DiT

DIT = partial(DiT, patch_size=2, hidden_size=96, depth=4, num_heads=4, mlp_ratio=4.0)


def main() -> None:
    """Run both loops alternately with the DiT and print steps/s and the ratio."""
    plain = partial(diffusion_throughput.plain_loop, net_factory=DIT)
    genlit = partial(diffusion_throughput.genlit_loop, net_factory=DIT)
    compare_with_plain_loop(__doc__, plain, genlit, batch_size=64, steps=50, warmup=5)


if __name__ == "__main__":
    main()
