"""The GPU path in one go: genlit's GPT with bf16-mixed and torch.compile, tokens/s and MFU against the GPU's bf16
peak, then the same under DDP and under FSDP2 (Lightning's ModelParallelStrategy).

    python -m benchmarks.gpu_gpt [--steps 200] [--warmup 30] [--peak-tflops 989] [--runs recipe gpt2 ddp fsdp2]
    python -m benchmarks.gpu_gpt --smoke      # the same runs on CPU with a tiny model: checks the script itself

Runs (each one ``genlit fit`` subprocess over every visible GPU, no validation, no checkpoints, no logger):

- ``recipe``: experiments/autoregressive/gpt_shakespeare_char.yaml (6 layers, 384 wide, context 256, batch 64)
  with ``--model.compile true``;
- ``gpt2``: the GPT-2 124M body (12 layers, 12 heads, 768 wide, context 1024, dropout 0, batch ``--gpt2-batch``)
  on the same characters, compiled: the shape of nanoGPT's MFU anchor (about 37% on an A100). The character
  vocabulary (65) leaves out GPT-2's 38.6M-parameter output layer, which MFU would count;
- ``ddp``: ``gpt2`` under ``--trainer.strategy ddp``;
- ``fsdp2``: ``gpt2`` with experiments/autoregressive/gpt_shakespeare_char_fsdp.yaml (every block one
  ``fully_shard`` unit).

Tokens/s counts every rank's tokens over the steps after ``--warmup`` (compilation included in the warm-up),
timed between CUDA synchronisations. MFU = tokens/s x the net's training FLOPs per token (``GPT.flops_per_token``:
6 N + attention) / (peak x GPUs). The peak is the spec sheet's dense bf16 figure for the GPU (``--peak-tflops``
to override), with a measured bf16 matmul rate printed beside it. Target: MFU >= 45% for ``gpt2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from benchmarks.args import positive_int
from benchmarks.gpt_throughput import matmul_peak

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments" / "autoregressive"
SPEC_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0, "L4": 121.0}
GPT2 = ["--model.net.init_args.n_layer", "12", "--model.net.init_args.n_head", "12",
        "--model.net.init_args.n_embd", "768", "--model.net.init_args.dropout", "0", "--data.init_args.block_size",
        "1024"]  # fmt: skip
TINY = ["--model.net.init_args.n_layer", "2", "--model.net.init_args.n_head", "2", "--model.net.init_args.n_embd",
        "32", "--data.init_args.block_size", "32", "--data.init_args.batch_size", "4"]  # fmt: skip


class TokenRate(L.Callback):
    """Time the training steps after ``warmup`` (CUDA-synchronised) and write tokens/s and MFU to ``path``."""

    def __init__(self, path: str, warmup: int, peak_flops: float) -> None:
        self.path, self.warmup, self.peak_flops = Path(path), warmup, peak_flops
        self.steps, self.tokens, self.start = 0, 0, None

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.start = self._now()
        elif self.steps > self.warmup:
            self.tokens += batch[0].numel() * trainer.world_size  # every rank's tokens of this step

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is None:
            raise RuntimeError(f"only {self.steps} steps ran, not more than warmup {self.warmup}; raise --steps")
        seconds = self._now() - self.start
        rate = self.tokens / seconds
        flops = pl_module.net.flops_per_token()
        memory = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0
        record = {"tokens_per_s": rate, "steps": self.steps - self.warmup, "seconds": seconds,
                  "world_size": trainer.world_size, "flops_per_token": flops,
                  "mfu": rate * flops / (self.peak_flops * trainer.world_size),
                  "max_memory_gb": memory}  # fmt: skip
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(record))


def spec_peak(override_tflops: float | None) -> tuple[float, str]:
    """The dense bf16 peak FLOP/s of GPU 0 from the spec table (or the override), and where it came from."""
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    name = torch.cuda.get_device_name(0)
    for key, tflops in SPEC_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"spec sheet of {key}"
    raise SystemExit(f"no bf16 peak known for {name!r}; pass --peak-tflops (dense bf16 TFLOP/s of the GPU)")


def run_args(name: str, args: argparse.Namespace) -> list[str]:
    """The ``genlit fit`` arguments of one run."""
    config = EXPERIMENTS / ("gpt_shakespeare_char_fsdp.yaml" if name == "fsdp2" else "gpt_shakespeare_char.yaml")
    extra = [] if name == "recipe" else [*GPT2, "--data.init_args.batch_size", str(args.gpt2_batch)]
    if name == "ddp":
        extra += ["--trainer.strategy", "ddp"]
    if args.smoke:
        extra += [*TINY, "--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
        extra += ["--trainer.devices", "2" if name in ("ddp", "fsdp2") else "1"]
    else:
        extra += ["--model.compile", "true", "--trainer.devices", "-1"]
    return ["--config", str(config), *extra]


def run(name: str, args: argparse.Namespace, peak: float, folder: Path) -> dict:
    """One ``genlit fit`` run with :class:`TokenRate`; its record."""
    out = folder / f"{name}.json"
    rate = {"class_path": "benchmarks.gpu_gpt.TokenRate",
            "init_args": {"path": str(out), "warmup": args.warmup, "peak_flops": peak}}  # fmt: skip
    command = [sys.executable, "-m", "genlit.cli", "fit", *run_args(name, args),
               "--trainer.max_steps", str(args.warmup + args.steps), "--trainer.limit_val_batches", "0",
               "--trainer.enable_checkpointing", "false", "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.callbacks", json.dumps([rate]),
               "--trainer.default_root_dir", str(folder / name)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
    if done.returncode != 0 or not out.is_file():
        print(f"{name}: FAILED (exit {done.returncode})\n{done.stderr[-3000:]}")
        return {}
    record = json.loads(out.read_text())
    record["wall_s"] = time.perf_counter() - start
    return record


def main() -> None:
    """Print each run's tokens/s and MFU."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=positive_int, default=30, help="untimed steps first (compilation)")
    parser.add_argument("--gpt2-batch", type=positive_int, default=32, help="sequences of 1024 per GPU and step")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU")
    parser.add_argument("--runs", nargs="+", default=["recipe", "gpt2", "ddp", "fsdp2"],
                        choices=["recipe", "gpt2", "ddp", "fsdp2"])  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, 2 processes for ddp/fsdp2")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 2)
        peak, where, device = matmul_peak(512), "measured float32 matmul (smoke run)", "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark needs one (or --smoke to check the script on CPU)")
    else:
        (peak, where), device = spec_peak(args.peak_tflops), "cuda"
        print(f"GPU: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    measured = matmul_peak(8192, 20, "cuda", torch.bfloat16) if device == "cuda" else peak
    print(f"peak {peak / 1e12:.1f} TFLOP/s ({where}); measured matmul {measured / 1e12:.1f} TFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            record = run(name, args, peak, Path(tmp))
            if record:
                print(f"{name:>7}: {record['tokens_per_s']:>12,.0f} tokens/s on {record['world_size']} device(s), "
                      f"MFU {record['mfu']:.1%} ({record['steps']} steps in {record['seconds']:.1f} s; whole run "
                      f"{record['wall_s']:.0f} s; peak memory {record['max_memory_gb']:.1f} GB)")  # fmt: skip


if __name__ == "__main__":
    main()
