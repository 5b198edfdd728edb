"""Per-rank GAN training steps/s under DDP with 2 CPU ranks (1 thread each) against one process with 1 thread.

DCGAN 28 px nets (width 64), batch 64 per rank, non-saturating loss, on the offline MNIST copy
(``$GENLIT_DATA_DIR/mnist``). One "step" = one discriminator step + one generator step. Each measurement is a
fresh ``python -m benchmarks.gan_ddp --worker N`` with ``OMP_NUM_THREADS=1``: N = 1 is a plain Trainer on one
device, N = 2 is ``Trainer(devices=2, strategy="ddp")`` (gloo), which launches its second rank itself, as
``genlit fit --trainer.devices 2`` does. The two alternate; the median of the per-repeat ratios
(per-rank steps/s of 2 ranks over steps/s of 1 process) is the DDP scaling efficiency. Two independent
1-process runs at once (no communication) give the machine's own ceiling: two processes share its memory
bandwidth and caches, so the part of the gap that DDP's all-reduces cost is the 2-rank rate over that one.

    python -m benchmarks.gan_ddp [--steps 200] [--warmup 20] [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from benchmarks.timing import BatchTimer, quiet_trainer, report_ratio, throughput_parser

RESULT = "GAN_DDP_RESULT "


def worker(devices: int, steps: int, warmup: int, batch_size: int) -> None:
    """Train ``warmup + steps`` steps on ``devices`` CPU processes; rank 0 prints its steps/s."""
    from genlit.data.images import ImageDataModule
    from genlit.families.gan import GAN
    from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = ImageDataModule(os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist"), batch_size=batch_size)
    adam = lambda params: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))  # noqa: E731
    model = GAN(DCGANGenerator, DCGANDiscriminator, (1, 28, 28), 10, g_optimizer=adam, d_optimizer=adam)
    timer = BatchTimer(warmup)
    strategy = {"devices": devices, "strategy": "ddp"} if devices > 1 else {"devices": 1}
    trainer = quiet_trainer(2 * (warmup + steps), timer, False, **strategy)  # D + G step per batch
    trainer.fit(model, datamodule=data)
    if trainer.global_rank == 0:
        print(RESULT + json.dumps({"devices": devices, "steps_per_s": timer.rate(steps)}), flush=True)


def measure(devices: int, args, copies: int = 1) -> float:
    """Steps/s of rank 0 in a fresh process tree with ``devices`` ranks of 1 thread each; with ``copies`` > 1,
    that many independent trees at once (no communication between them), and the mean of their rates."""
    command = [sys.executable, "-m", "benchmarks.gan_ddp", "--worker", str(devices), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(copies)]  # fmt: skip
    rates = []
    for run in runs:
        stdout, stderr = run.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
        if run.returncode != 0 or not lines:
            raise SystemExit(f"the {devices}-rank run failed:\n{stderr[-3000:]}")
        rates.append(json.loads(lines[-1][len(RESULT) :])["steps_per_s"])
    return sum(rates) / len(rates)


def main() -> None:
    """Alternate one process and two ranks; print steps/s and the scaling efficiency."""
    parser = throughput_parser(__doc__, batch_size=64, steps=200, warmup=20)
    parser.add_argument("--worker", type=int, choices=(1, 2), help="internal: one measurement on this many ranks")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.batch_size)
        return
    print(f"torch {torch.__version__}; {args.steps} timed steps after {args.warmup}, batch {args.batch_size} per rank")
    loops = {
        "one_process": lambda: measure(1, args),
        "two_ranks_per_rank": lambda: measure(2, args),
        "two_independent_each": lambda: measure(1, args, copies=2),  # the machine's ceiling without any all-reduce
    }
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(args.repeats):
        for name, loop in loops.items():
            runs[name].append(loop())
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()) + " steps/s", flush=True)
    report_ratio(runs, "two_ranks_per_rank", "one_process", " (DDP scaling efficiency)")
    report_ratio(runs, "two_independent_each", "one_process", " (two processes sharing the machine, no DDP)")
    report_ratio(runs, "two_ranks_per_rank", "two_independent_each", " (what the all-reduces cost)")


if __name__ == "__main__":
    main()
