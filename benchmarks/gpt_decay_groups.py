"""Does it matter for the CPU recipe's loss that genlit leaves embeddings out of weight decay and nanoGPT does not?

genlit's ``decay_groups`` decays the weight matrices of linear layers only (the issue's rule: norms, biases and
embeddings get none); nanoGPT's ``configure_optimizers`` decays every parameter of two or more dimensions, the
token embedding (tied to the head) and the position embedding included. For each seed this trains the hand-written
CPU recipe (``benchmarks/plain_gpt.py``: same model, batch, schedule and clipping) once with each grouping, from the
same initial weights and batches, and prints the loss on the whole validation split (fixed blocks of 64).

    python -m benchmarks.gpt_decay_groups [--seeds 1337 1 2] [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import benchmarks.plain_gpt as plain_gpt
from benchmarks.args import positive_int
from genlit.data.tensors import tensor_loader
from genlit.data.text import TokenBlocks
from genlit.optim import decay_groups

BATCH = 12


def nanogpt_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's grouping: decay every parameter with two or more dimensions, none for the rest."""
    params = [p for p in net.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def main() -> None:
    """Train both groupings per seed; print the whole-split validation losses and the wall time of each run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--steps", type=positive_int, default=2000)
    args = parser.parse_args()
    train, val, chars = plain_gpt.char_splits()
    val_blocks = tensor_loader(TokenBlocks(val, plain_gpt.BLOCK, stride=plain_gpt.BLOCK), 256, train=False)
    for seed in args.seeds:
        for name, grouping in (("genlit", decay_groups), ("nanogpt", nanogpt_groups)):
            torch.manual_seed(seed)
            net, step = plain_gpt.plain_training(train, len(chars), BATCH, grouping)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            wall = time.perf_counter() - start
            loss = plain_gpt.validation_loss(net, val_blocks, first=1)[1]
            print(f"seed {seed}, {name} decay groups: whole-split val loss {loss:.4f} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
