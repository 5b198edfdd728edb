"""GPT recipes side by side in one process: nanoGPT's 2022 CPU recipe against the modern options, each trained by
the same hand-written loop for the same wall-clock budget, then scored on the whole validation split.

What it is for: choosing ``experiments/autoregressive/gpt_shakespeare_char_cpu_fast.yaml`` (and showing what each
option buys). A recipe is the net's options, the optimizer (AdamW, or Muon on the hidden matrices with AdamW for
the rest, :class:`genlit.optim.MuonAdamW`), the schedule (warm-up + cosine, or warm-up / constant / cool-down),
batch size and step count. Every recipe trains on random blocks of the same training split with the same seed;
the loss is nats per character over every non-overlapping 64-character block of the validation split.

    python -m benchmarks.gpt_recipes [--recipes plain modern ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.plain_gpt import BLOCK, char_splits, random_blocks
from genlit.nets.gpt import GPT
from genlit.optim import MuonAdamW, WarmupCosineLR, WarmupStableDecayLR, decay_groups

SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}
MODERN_NET = {"position": "rotary", "norm": "rmsnorm", "qk_norm": True, "mlp": "relu2", "tie_weights": False,
              "logit_softcap": 30.0}  # fmt: skip
RECIPES = {
    # nanoGPT's CPU recipe (experiments/autoregressive/gpt_shakespeare_char_cpu.yaml)
    "plain": {"net": {}, "opt": "adamw", "lr": 1e-3, "batch": 12, "steps": 2000, "sched": "cosine"},
    # the modern net with the 2022 optimizer, and the 2022 net with the modern optimizer
    "modern_net_adamw": {"net": MODERN_NET, "opt": "adamw", "lr": 2e-3, "batch": 12, "steps": 2000, "sched": "wsd"},
    "plain_net_muon": {
        "net": {},
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 2000,
        "sched": "wsd",
    },  # fmt: skip
    "modern": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 2000,
        "sched": "wsd",
    },  # fmt: skip
    "modern_short": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 1000,
        "sched": "wsd",
    },  # fmt: skip
    "plain_net_muon_800": {
        "net": {},
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 800,
        "sched": "wsd",
    },  # fmt: skip
    "modern_800": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 800,
        "sched": "wsd",
    },  # fmt: skip
    "modern_800_lr": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 6e-3,
        "muon_lr": 0.05,
        "batch": 12,
        "steps": 800,
        "sched": "wsd",
    },  # fmt: skip
    "plain_net_muon_500": {
        "net": {},
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 500,
        "sched": "wsd",
    },  # fmt: skip
    "modern_500": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 3e-3,
        "muon_lr": 0.03,
        "batch": 12,
        "steps": 500,
        "sched": "wsd",
    },  # fmt: skip
    "modern_b24_short": {
        "net": MODERN_NET,
        "opt": "muon",
        "lr": 4e-3,
        "muon_lr": 0.04,
        "batch": 24,
        "steps": 600,
        "sched": "wsd",
    },  # fmt: skip
}


def build(recipe: dict, vocab: int):
    """The net, its optimizer and its scheduler for ``recipe``."""
    net = GPT(vocab, BLOCK, **SIZE, **recipe["net"])
    steps = recipe["steps"]
    if recipe["opt"] == "adamw":
        opt = torch.optim.AdamW(decay_groups(net, 0.1), lr=recipe["lr"], betas=(0.9, 0.99), fused=True)
    else:
        groups = decay_groups(net, 0.1, net.blocks)
        opt = MuonAdamW(groups, lr=recipe["lr"], muon_lr=recipe["muon_lr"], betas=(0.9, 0.99), fused=True)
    if recipe["sched"] == "cosine":
        sched = WarmupCosineLR(opt, 100, steps, recipe["lr"] / 10)
    else:
        sched = WarmupStableDecayLR(opt, steps, cooldown_steps=int(0.5 * steps), warmup_steps=min(100, steps // 10))
    return net, opt, sched


def whole_split_loss(net: GPT, val: torch.Tensor, batch: int = 64) -> float:
    """Mean next-character loss over every non-overlapping block of ``val``."""
    n = (len(val) - 1) // BLOCK
    x = val[: n * BLOCK].view(n, BLOCK)  # (n, T)
    y = val[1 : n * BLOCK + 1].view(n, BLOCK)  # (n, T)
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            total += F.cross_entropy(net(x[i : i + batch]).flatten(0, 1), y[i : i + batch].flatten(), reduction="sum")
    net.train()
    return float(total) / (n * BLOCK)


def run(name: str, recipe: dict, train, val, vocab: int, seed: int) -> tuple[float, float, int]:
    """Train ``recipe`` for its steps; return (wall seconds of training, whole-split val loss, steps)."""
    torch.manual_seed(seed)
    net, opt, sched = build(recipe, vocab)
    start = time.perf_counter()
    for _ in range(recipe["steps"]):
        x, y = random_blocks(train, recipe["batch"])
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    return seconds, whole_split_loss(net, val), recipe["steps"]


def main() -> None:
    """Train each chosen recipe; print steps, training seconds, seconds per step and the whole-split loss."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, val, chars = char_splits()
    print(f"{'recipe':<18} {'steps':>6} {'batch':>6} {'train s':>8} {'ms/step':>8} {'val loss':>9}")
    for name in args.recipes:
        recipe = RECIPES[name]
        seconds, loss, steps = run(name, recipe, train, val, len(chars), args.seed)
        print(f"{name:<18} {steps:>6} {recipe['batch']:>6} {seconds:>8.1f} {1000 * seconds / steps:>8.1f} {loss:>9.4f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
