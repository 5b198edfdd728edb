"""Peak memory of one GPT training step with and without activation checkpointing.

The model of experiments/autoregressive/gpt_shakespeare_char.yaml (nanoGPT's GPU recipe: 6 layers, 6 heads,
384 wide, context 256, dropout 0.2, 65 characters) at batch 8. Each mode runs in its own process so peaks do not
mix. Printed per mode:
- the bytes autograd saves for the backward pass (activation memory; saved-tensor hooks, each storage once);
- the step's peak memory above the model, gradients and AdamW state: CUDA ``max_memory_allocated`` on a GPU,
  otherwise the process's peak resident set size (``ru_maxrss``) above what it held before the step;
- the time of a step (best of three, after the measured one).

    python -m benchmarks.gpt_memory [--batch-size 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from genlit.nets.gpt import GPT
from genlit.optim import decay_groups

NET = {"n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2}
VOCAB, BLOCK = 65, 256


def measure(checkpointing: bool, batch_size: int, device: str) -> dict:
    """One mode's figures (run in a child process)."""
    torch.manual_seed(0)
    net = GPT(VOCAB, BLOCK, activation_checkpointing=checkpointing, **NET).to(device)
    opt = torch.optim.AdamW(decay_groups(net, 0.1), lr=1e-3)
    x = torch.randint(VOCAB, (batch_size, BLOCK), device=device)  # (B, T)
    y = torch.randint(VOCAB, (batch_size, BLOCK), device=device)  # (B, T)
    for param in net.parameters():  # gradients and AdamW state exist before the measured step (no forward yet,
        param.grad = torch.zeros_like(param)  # so the process's peak so far holds no activations)
    opt.step()
    storages: dict[int, int] = {}

    def pack(tensor):  # count each storage once: views of one tensor share it
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_peak()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _step(net, opt, x, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _rss_peak() - before
    times = []
    for _ in range(3):  # after the measured step: warm allocator and caches
        start = time.perf_counter()
        _step(net, opt, x, y)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"saved": sum(storages.values()), "peak": peak, "seconds": min(times)}


def _step(net, opt, x, y) -> None:
    loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()


def _rss_peak() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    """Measure both modes in child processes and print a comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "checkpointed", args.batch_size, args.device)))
        return
    print(f"GPT {NET}, context {BLOCK}, batch {args.batch_size}, device {args.device}, torch {torch.__version__}")
    results = {}
    for mode in ("plain", "checkpointed"):
        cmd = [sys.executable, __file__, "--child", mode, "--batch-size", str(args.batch_size), "--device", args.device]
        results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        r = results[mode]
        print(f"{mode:>12}: saved activations {r['saved'] / 2**20:7.1f} MiB, step peak {r['peak'] / 2**20:7.1f} MiB, "
              f"step {r['seconds']:.2f} s")  # fmt: skip
    plain, ckpt = results["plain"], results["checkpointed"]
    saved, peak, slower = (
        ckpt["saved"] / plain["saved"],
        ckpt["peak"] / plain["peak"],
        ckpt["seconds"] / plain["seconds"],
    )
    print(f"checkpointing keeps {saved:.1%} of the saved activations and {peak:.1%} of the step peak, "
          f"at {slower:.2f}x the time")  # fmt: skip


if __name__ == "__main__":
    main()
