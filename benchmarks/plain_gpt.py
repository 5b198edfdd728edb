"""The hand-written GPT training step that the GPT benchmarks compare genlit against.

The model, batch and optimization of experiments/autoregressive/gpt_shakespeare_char_cpu.yaml (nanoGPT's CPU
recipe): 4 layers, 4 heads, 128 wide, context 64, batch 12, fused AdamW (betas 0.9/0.99) over the decay groups,
warm-up + cosine from 1e-3 to 1e-4, clip 1.0. Batches are random blocks, as nanoGPT's ``get_batch`` draws them.
Imports torch and genlit's net only (no Lightning), as a hand-written script would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlit.nets.gpt import GPT
from genlit.optim import WarmupCosineLR, decay_groups

BLOCK, NET = 64, {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}
LR, WARMUP, DECAY, MIN_LR, WEIGHT_DECAY, CLIP = 1e-3, 100, 2000, 1e-4, 0.1, 1.0


def shakespeare_path() -> Path:
    """Tiny Shakespeare in ``$GENLIT_DATA_DIR``, the corpus of every GPT benchmark."""
    if "GENLIT_DATA_DIR" not in os.environ:
        raise SystemExit("set GENLIT_DATA_DIR to the shared data folder (it holds tinyshakespeare/input.txt)")
    return Path(os.environ["GENLIT_DATA_DIR"], "tinyshakespeare", "input.txt")


def char_splits() -> tuple[Tensor, Tensor, str]:
    """Tiny Shakespeare as character ids, split 90/10 contiguously as nanoGPT does: train (N,), val (M,) and the
    vocabulary (the sorted characters of the whole text)."""
    text = shakespeare_path().read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)  # (N + M,)
    n = int(0.9 * len(data))
    return data[:n], data[n:], "".join(chars)


def validation_loss(net: GPT, val_loader, first: int) -> tuple[float, float]:
    """Mean next-token loss (nats per token) of ``net`` over the first ``first`` batches of ``val_loader``, and
    over all of them."""
    net.eval()
    sums, counts = [], []
    with torch.no_grad():
        for x, y in val_loader:
            sums.append(F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum").item())
            counts.append(y.numel())
    return sum(sums[:first]) / sum(counts[:first]), sum(sums) / sum(counts)


def adamw(groups):
    """The optimizer both loops use (nanoGPT's betas; the fused kernel, as the YAML)."""
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99), fused=True)


def schedule(optimizer):
    """The learning-rate schedule both loops use."""
    return WarmupCosineLR(optimizer, WARMUP, DECAY, MIN_LR)


def random_blocks(corpus: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-token targets (B, BLOCK) each, from blocks at uniformly random offsets of ``corpus``."""
    ix = torch.randint(len(corpus) - BLOCK, (batch_size,)).tolist()
    x = torch.stack([corpus[i : i + BLOCK] for i in ix])  # (B, T)
    y = torch.stack([corpus[i + 1 : i + 1 + BLOCK] for i in ix])  # (B, T)
    return x, y


def plain_training(
    corpus: Tensor, vocab_size: int, batch_size: int, groups: Callable[[nn.Module, float], list[dict]] = decay_groups
) -> tuple[GPT, Callable[[], Tensor]]:
    """A fresh GPT and a function doing one hand-written training step on it (returns the loss); ``groups`` makes
    the optimizer's weight-decay groups (genlit's by default)."""
    net = GPT(vocab_size, BLOCK, **NET)
    opt = adamw(groups(net, WEIGHT_DECAY))
    sched = schedule(opt)

    def step() -> Tensor:
        x, y = random_blocks(corpus, batch_size)
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        sched.step()
        return loss

    return net, step
