"""Training tokens/s of genlit's GPT against a hand-written PyTorch loop doing the same work, in one run, and the
model FLOPs utilization (MFU) of both against the float32 matmul peak this script measures on the machine.

Model, batch and optimization of experiments/autoregressive/gpt_shakespeare_char_cpu.yaml (nanoGPT's CPU recipe:
4 layers, 4 heads, 128 wide, context 64, batch 12, AdamW with decay groups, warm-up + cosine, clip 1.0) on
``$GENLIT_DATA_DIR/tinyshakespeare/input.txt``, character tokens. The plain loop draws random blocks as nanoGPT's
``get_batch`` does; genlit's goes through ``TextDataModule`` and a Lightning Trainer. The loops alternate and the
median of the per-repeat ratios is printed.

    python benchmarks/gpt_throughput.py [--steps 300] [--warmup 30] [--repeats 5] [--batch-size 12]
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from benchmarks.plain_gpt import BLOCK, CLIP, NET, WEIGHT_DECAY, adamw, plain_training, schedule
from benchmarks.timing import BatchTimer, alternate, quiet_trainer, report_ratio, shakespeare_data, throughput_args
from genlit.data.text import TextDataModule
from genlit.families.autoregressive import AutoregressiveLM
from genlit.nets.gpt import GPT


def plain_loop(corpus: torch.Tensor, vocab_size: int, steps: int, warmup: int, batch_size: int) -> float:
    """A hand-written GPT training loop; returns steps/s measured after ``warmup`` steps."""
    _, step = plain_training(corpus, vocab_size, batch_size)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        step()
    return steps / (time.perf_counter() - start)


def genlit_loop(data: TextDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's AutoregressiveLM through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = AutoregressiveLM(
        partial(GPT, **NET), data.vocab_size, BLOCK, WEIGHT_DECAY, optimizer=adamw, lr_scheduler=schedule
    )
    timer = BatchTimer(warmup)
    quiet_trainer(warmup + steps, timer, progress_bar, gradient_clip_val=CLIP).fit(model, datamodule=data)
    return timer.rate(steps)


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of a (size x size) @ (size x size) matmul on this machine (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Run both loops alternately; print steps/s, tokens/s, the ratio and MFU."""
    args = throughput_args(__doc__, batch_size=12)
    data = shakespeare_data(args.batch_size)
    corpus = data.split_tokens("train")
    print(f"batch {args.batch_size} x {BLOCK} tokens, vocabulary {data.vocab_size}")
    loops = {
        "plain": lambda: plain_loop(corpus, data.vocab_size, args.steps, args.warmup, args.batch_size),
        "genlit": lambda: genlit_loop(data, args.steps, args.warmup, not args.no_progress_bar),
    }
    runs = alternate(loops, args.repeats)
    report_ratio(runs, "genlit", "plain")
    peak = matmul_peak()
    flops = GPT(data.vocab_size, BLOCK, **NET).flops_per_token()
    tokens = args.batch_size * BLOCK
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32, 2048^3); model {flops / 1e6:.2f} MFLOP/token")
    for name, rates in runs.items():
        rate = statistics.median(rates) * tokens
        print(f"{name}: {rate:,.0f} tokens/s, MFU {rate * flops / peak:.1%}")


if __name__ == "__main__":
    main()
