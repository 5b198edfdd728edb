"""slurm/train.sbatch under a real (one-node, localhost) SLURM: SIGUSR1 mid-run, the job checkpoints and requeues
itself, and the requeued job (the same id) resumes from the checkpoint and finishes with the full step count.

Slow (about four minutes: SLURM starts a requeued job after a delay); it skips with one line when SLURM's
packages or root are missing.
"""

import os

import pytest
import torch

from tests.conftest import EXPERIMENTS, REPO
from tests.integration import slurm_cluster

pytestmark = pytest.mark.slow
STEPS = 1500


def cpu_template(folder):
    """The shipped template for a CPU-only cluster: no GPU request, one task with the node's cores."""
    text = (REPO / "slurm" / "train.sbatch").read_text()
    text = text.replace("#SBATCH --gres=gpu:4\n", "").replace("--ntasks-per-node=4 ", "--ntasks-per-node=1 ")
    text = text.replace("--cpus-per-task=8\n", f"--cpus-per-task={os.cpu_count() or 2}\n")
    path = folder / "train.sbatch"
    path.write_text(text)
    return path


def test_the_template_requeues_on_sigusr1_and_resumes(tmp_path):
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    cluster = slurm_cluster.SlurmCluster(tmp_path / "slurm").start()
    try:
        marker, root, log = tmp_path / "training", tmp_path / "runs", tmp_path / "job.out"
        touch = '{"class_path": "tests.integration.fault_probe.TouchAt", "init_args": {"step": 400, "path": "%s"}}'
        args = [str(EXPERIMENTS / "gan" / "toy_ring8.yaml"), "--trainer.accelerator", "cpu", "--trainer.precision",
                "32-true", "--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", "500", "--trainer.logger",
                "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                f"--trainer.callbacks+={touch % marker}"]  # fmt: skip
        cluster.env["PYTHONPATH"] = str(REPO)
        job = cluster.run("sbatch", "--parsable", f"--output={log}", str(cpu_template(tmp_path)), *args).strip()
        cluster.wait(marker.exists, 240, "the job to train 400 steps")
        cluster.run("scancel", "--signal=USR1", job)  # what --signal=SIGUSR1@90 sends before the time limit
        cluster.wait(lambda: cluster.job(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 400, "the end")
        state = cluster.job(job)
        output = log.read_text()
        assert state["JobState"] == "COMPLETED" and int(state["Restarts"]) == 1, output[-3000:]
        run = root / f"slurm-{job}-step0"
        assert (run / "hpc_ckpt_1.ckpt").is_file()
        assert f"Restoring states from the checkpoint path at {run / 'hpc_ckpt_1.ckpt'}" in output
        assert f"`Trainer.fit` stopped: `max_steps={STEPS}` reached." in output
        assert torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] >= 400
        assert [p.name for p in root.iterdir()] == [run.name]
    finally:
        cluster.stop()
