"""Lightning's fixed cost per training step, measured on a model too small to hide it.

A next-token model of one embedding and one linear layer on random tokens (batch 12 x 64, as the GPT CPU recipe)
is trained by a hand-written loop and by ``AutoregressiveLM`` under a Lightning Trainer, each with fused AdamW,
gradient clipping and a warm-up + cosine schedule; the Trainer runs with Lightning's default rich progress bar,
with genlit's :class:`~genlit.callbacks.progress.ThrottledProgressBar`, and without a bar. Prints ms per step
of each, alternating, and the medians. What is left between "plain" and "no bar" is Lightning's loop itself.

    python -m benchmarks.lightning_overhead [--steps 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.args import positive_int
from benchmarks.timing import BatchTimer
from genlit.callbacks.progress import ThrottledProgressBar
from genlit.data.tensors import keep_batch
from genlit.data.text import TokenBlocks
from genlit.families.autoregressive import AutoregressiveLM
from genlit.optim import WarmupCosineLR, decay_groups

VOCAB, BLOCK, BATCH, WARMUP = 65, 64, 12, 50


class TinyLM(torch.nn.Module):
    """Embedding -> linear head: almost no compute, so the loop's own cost shows."""

    def __init__(self, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.emb, self.head, self.context_size = torch.nn.Embedding(vocab_size, 8), torch.nn.Linear(8, vocab_size), None

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        return self.head(self.emb(idx))  # (B, T, V)


def adamw(groups):
    """The optimizer of every loop."""
    return torch.optim.AdamW(groups, lr=1e-3, fused=True)


def schedule(optimizer):
    """The schedule of every loop."""
    return WarmupCosineLR(optimizer, 100, 2000, 1e-4)


def loader(corpus: torch.Tensor) -> DataLoader:
    """Shuffled blocks of the corpus, fetched a batch at a time (as TextDataModule serves them)."""
    return DataLoader(TokenBlocks(corpus, BLOCK), batch_size=BATCH, shuffle=True, drop_last=True, collate_fn=keep_batch)


def plain(corpus: torch.Tensor, steps: int) -> float:
    """ms per step of a hand-written loop."""
    net = TinyLM(VOCAB, BLOCK)
    opt = adamw(decay_groups(net, 0.1))
    sched = schedule(opt)
    batches = iter(loader(corpus))
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        x, y = next(batches)
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    return (time.perf_counter() - start) / steps * 1e3


def lightning(corpus: torch.Tensor, steps: int, bar: str) -> float:
    """ms per step of AutoregressiveLM under a Trainer with the given progress bar (rich, throttled, none)."""
    model = AutoregressiveLM(TinyLM, VOCAB, BLOCK, optimizer=adamw, lr_scheduler=schedule)
    timer = BatchTimer(WARMUP)
    callbacks = [timer, ThrottledProgressBar()] if bar == "throttled" else [timer]
    trainer = L.Trainer(
        max_steps=WARMUP + steps, logger=False, enable_checkpointing=False, limit_val_batches=0, accelerator="cpu",
        enable_model_summary=False, enable_progress_bar=bar != "none", callbacks=callbacks, gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(model, loader(corpus))
    return (timer.end - timer.start) / steps * 1e3


def main() -> None:
    """Alternate the four loops and print ms per step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()
    corpus = torch.randint(VOCAB, (1_000_000,))
    loops = {
        "plain": lambda: plain(corpus, args.steps),
        "lightning, rich bar": lambda: lightning(corpus, args.steps, "rich"),
        "lightning, throttled bar": lambda: lightning(corpus, args.steps, "throttled"),
        "lightning, no bar": lambda: lightning(corpus, args.steps, "none"),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for r in range(args.repeats):
        for name, loop in loops.items():
            times[name].append(loop())
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()) + " ms/step", flush=True)
    print("median ms/step: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
