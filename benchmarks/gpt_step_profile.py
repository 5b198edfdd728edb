"""Where the time of one CPU-recipe GPT training step goes: the hand-written step of ``benchmarks/plain_gpt.py``
(4 x 128, context 64, batch 12, fused AdamW, clipping) under ``torch.profiler``, by operator.

Prints the step time without the profiler, then the self CPU time per step of the main operator groups
(matmuls, attention, GELU, layer norm, optimizer) and the top operators. The matmul line also gives the
FLOP/s those matmuls reach against this machine's float32 peak (a 2048^3 matmul).

    python -m benchmarks.gpt_step_profile [--steps 30]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile

from benchmarks.args import positive_int
from benchmarks.gpt_throughput import matmul_peak
from benchmarks.plain_gpt import BLOCK, NET, plain_training
from benchmarks.timing import shakespeare_data
from genlit.nets.gpt import GPT

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": ("aten::_scaled_dot_product",),
    "gelu": ("aten::gelu",),
    "layer norm": ("aten::native_layer_norm",),
    "optimizer": ("aten::_fused_adamw", "aten::_foreach", "aten::linalg_vector_norm"),
}


def group_of(op: str) -> str:
    """The operator group of ``op`` (``other`` when none matches)."""
    return next((name for name, prefixes in GROUPS.items() if op.startswith(prefixes)), "other")


def main() -> None:
    """Time the plain step, profile it, print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--batch-size", type=positive_int, default=12)
    args = parser.parse_args()
    data = shakespeare_data(args.batch_size)
    net, step = plain_training(data.split_tokens("train"), data.vocab_size, args.batch_size)
    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_ms = (time.perf_counter() - start) / args.steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    per_step = {e.key: e.self_cpu_time_total / 1e3 / args.steps for e in events}  # ms per step
    groups: dict[str, float] = defaultdict(float)
    for op, ms in per_step.items():
        groups[group_of(op)] += ms
    total = sum(per_step.values())
    print(f"step {step_ms:.1f} ms without the profiler; {total:.1f} ms of operator self time with it")
    peak = matmul_peak()
    tokens = args.batch_size * BLOCK
    flops = 6 * GPT(data.vocab_size, BLOCK, **NET).num_parameters() * tokens  # weight matmuls, forward + backward
    for name, ms in sorted(groups.items(), key=lambda item: -item[1]):
        extra = f"   {flops / (ms / 1e3) / 1e9:.0f} GFLOP/s of a {peak / 1e9:.0f} peak" if name == "matmul" else ""
        print(f"  {name:<12} {ms:6.2f} ms/step  {ms / total:6.1%}{extra}")
    print("top operators (self CPU ms per step):")
    for op, ms in sorted(per_step.items(), key=lambda item: -item[1])[:12]:
        print(f"  {op[:60]:<60} {ms:6.2f}")


if __name__ == "__main__":
    main()
