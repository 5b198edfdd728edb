"""Kill runs and resume them: steps lost per kill, and whether the final weights equal the uninterrupted run's.

    python -m benchmarks.faults [--kills 3] [--families gan vae gpt] [--seed 0]

For each family a short run is trained once uninterrupted. The same run is then killed ``--kills`` times at
random steps (``kill -9``; with ``--sigusr1`` the last kill is SLURM's SIGUSR1 under simulated SLURM variables
and a fake ``scontrol`` that records the requeue and ends the job) and resumed each time with
``--ckpt_path last`` (or, after SIGUSR1, with no option at all, as a requeued job). Checkpoints are written every
``--every`` optimizer steps. Printed per family: each kill's step, the step it resumed from, the steps lost, and
whether the final state dict equals the uninterrupted run's to the bit. Then the cost of a checkpoint write
against the 10-minute interval of the experiments' TimedCheckpoint. The vae family's experiment measures val/fid:
train the MNIST evaluator first (README), from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.args import positive_int
from genlit.commands.runs import newest_checkpoint

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENLIT_DATA_DIR", REPO.parent / "shared" / "data"))
GAN_ARGS = [
    "--model.init_args.n_critic",
    "2",
    "--data.init_args.num_train",
    "2560",
    "--trainer.val_check_interval",
    "10",
]
VAE_ARGS = ["--data.init_args.dataset", str(DATA / "mnist"), "--trainer.limit_train_batches", "12",
            "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "32"]  # fmt: skip
GPT_ARGS = ["--trainer.val_check_interval", "20", "--trainer.limit_val_batches", "2"]
FAMILIES = {  # (config, overrides, optimizer steps)
    "gan": ("gan/toy_ring8.yaml", GAN_ARGS, 90),  # D and G steps, n_critic 2, 10 batches an epoch
    "vae": ("vae/vae_mnist.yaml", VAE_ARGS, 60),  # automatic optimization, random binarization every step
    "gpt": ("autoregressive/gpt_shakespeare_char_cpu.yaml", GPT_ARGS, 60),
}
FAKE_SCONTROL = '#!/bin/sh\necho "$@" >> "{record}"\nkill -9 $PPID\n'


def callback(class_path: str, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": class_path, "init_args": init_args})


def fit(family: str, root: Path, extra: list[str], env: dict) -> subprocess.CompletedProcess:
    config, overrides, steps = FAMILIES[family]
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(REPO / "experiments" / config), *overrides,
               "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(root), "--trainer.logger",
               "false", "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)


def end_state(path: Path) -> dict:
    return torch.load(path.with_suffix(".pt"), weights_only=True)


def run_family(family: str, kills: int, every: int, sigusr1: bool, work: Path, rng: random.Random) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    checkpoints = callback("lightning.pytorch.callbacks.ModelCheckpoint", every_n_train_steps=every, save_top_k=0,
                           save_last=True)  # fmt: skip
    probe = "tests.integration.fault_probe"
    start = time.perf_counter()
    end = callback(f"{probe}.SaveEndState", path=str(work / family / "whole"))
    whole = fit(family, work / family / "whole", [checkpoints, end], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    wall = time.perf_counter() - start
    steps = FAMILIES[family][2]
    kill_steps = sorted(rng.sample(range(every + 1, steps - 1), kills))
    root, lost = work / family / "runs", []
    if sigusr1:
        env = _simulated_slurm(env, work / family)
    for i, step in enumerate(kill_steps):
        how = "SignalAt" if sigusr1 and i == kills - 1 else "KillAt"
        resume = ["--ckpt_path", "last"] if i > 0 and not sigusr1 else []  # under SLURM a relaunch just continues
        record = work / family / "killed_at"
        killed = fit(family, root, [checkpoints, callback(f"{probe}.{how}", step=step, record=str(record)), *resume],
                     env)  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        (run,) = root.iterdir()
        saved = torch.load(newest_checkpoint(run), weights_only=True)["global_step"]
        lost.append((int(record.read_text()), saved))
    resume = [] if sigusr1 else ["--ckpt_path", "last"]
    final = fit(family, root, [checkpoints, callback(f"{probe}.SaveEndState", path=str(work / family / "resumed")),
                               *resume], env)  # fmt: skip
    assert final.returncode == 0, final.stderr[-2000:]
    expected, got = end_state(work / family / "whole"), end_state(work / family / "resumed")
    same = expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    folders = len(list(root.iterdir()))
    print(f"{family}: {steps} steps, uninterrupted {wall:.0f} s; checkpoint every {every} steps; {folders} run folder")
    for (step, saved), how in zip(lost, ["kill -9"] * (kills - 1) + ["SIGUSR1" if sigusr1 else "kill -9"], strict=True):
        print(f"  {how:<8} at step {step:>3}: resumed from step {saved:>3}, {step - saved} steps lost")
    print(f"  final weights, EMA and buffers identical to the uninterrupted run: {same}")


def _simulated_slurm(env: dict, folder: Path) -> dict:
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(record=folder / "scontrol.calls"))
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "faults", "SLURM_NTASKS": "1", "SLURM_NODELIST": "localhost",
             "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}  # fmt: skip
    return {**env, **slurm, "PATH": f"{bin_dir}:{env['PATH']}"}


def checkpoint_cost(family: str, work: Path) -> None:
    """Seconds per checkpoint write of the family's final checkpoint, as a share of a 10-minute interval."""
    ckpt = next((work / family / "whole").glob("*/checkpoints/last.ckpt"))
    checkpoint = torch.load(ckpt, weights_only=False)
    from genlit.callbacks.checkpoints import AtomicCheckpointIO

    io, target, times = AtomicCheckpointIO(), work / family / "cost.ckpt", []
    for _ in range(5):
        start = time.perf_counter()
        io.save_checkpoint(checkpoint, target)
        times.append(time.perf_counter() - start)
    write = sorted(times)[len(times) // 2]
    print(f"{family}: checkpoint {ckpt.stat().st_size / 2**20:.1f} MiB written in {write * 1000:.0f} ms (median of 5): "
          f"{100 * write / 600:.3f}% of a 10-minute TimedCheckpoint interval")  # fmt: skip


def main() -> None:
    """Train, kill, resume and compare for each family; then the checkpoint cost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--kills", type=positive_int, default=3)
    parser.add_argument("--every", type=positive_int, default=7, help="optimizer steps between checkpoints")
    parser.add_argument("--sigusr1", action="store_true", help="the last kill is SLURM's SIGUSR1 (simulated)")
    parser.add_argument("--seed", type=int, default=0, help="of the kill steps")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            run_family(family, args.kills, args.every, args.sigusr1, Path(tmp), rng)
        for family in args.families:
            checkpoint_cost(family, Path(tmp))


if __name__ == "__main__":
    main()
