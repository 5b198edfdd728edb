"""SLURM auto-requeue, simulated: the job's variables are set and a fake ``scontrol`` (first on PATH) records the
requeue and then ends the job, as SLURM does; SIGUSR1 (``--signal=SIGUSR1@90``) reaches the running fit. The
requeued job (the same command, the same job id) resumes from the checkpoint written on the signal."""

import os
import signal
import subprocess
import sys

import torch

from tests.conftest import EXPERIMENTS, REPO

FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{record}"
kill -9 $PPID  # SLURM ends the job it requeues
"""


def test_sigusr1_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
    bin_dir, record, root = tmp_path / "bin", tmp_path / "scontrol.calls", tmp_path / "runs"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(record=record))
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "genlit-test", "SLURM_NTASKS": "1",
             "SLURM_NODELIST": "localhost", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}  # fmt: skip
    env = {**os.environ, **slurm, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    env.pop("GENLIT_RUN_DIR", None)
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"),
               "--trainer.max_steps", "40", "--trainer.val_check_interval", "10", "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]  # fmt: skip
    usr1 = '--trainer.callbacks+={"class_path": "tests.integration.fault_probe.SignalAt", "init_args": {"step": 24}}'

    first = subprocess.run([*command, usr1], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert record.read_text().split() == ["requeue", "4242"]
    run = root / "slurm-4242"
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] >= 24

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)  # the requeued job
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {run / 'hpc_ckpt_1.ckpt'}" in again.stderr
    assert [p.name for p in root.iterdir()] == ["slurm-4242"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
