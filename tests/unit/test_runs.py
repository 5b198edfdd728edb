"""Which run folder a launch writes into and which checkpoint it continues (genlit.commands.runs)."""

import os
import time

import pytest

from genlit.commands import runs
from genlit.commands.runs import resolve_run


@pytest.fixture(autouse=True)
def no_launcher_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(name)
    for name in ("LOCAL_RANK", "WORLD_SIZE", runs.RUN_DIR_ENV):
        monkeypatch.delenv(name, raising=False)


def make_run(root, name, age_s=0.0, ckpt="checkpoints/last.ckpt"):
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}")
    if ckpt:
        path = run / ckpt
        path.write_bytes(b"x")
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return run


def test_a_plain_launch_gets_a_new_folder_named_by_the_time(tmp_path):
    run, ckpt = resolve_run(str(tmp_path), None, None)
    assert run.parent == tmp_path and run.name[:8].isdigit() and ckpt is None and not run.exists()


def test_last_is_the_newest_checkpoint_of_the_newest_run(tmp_path):
    make_run(tmp_path, "20260101-000000", age_s=10)
    newer = make_run(tmp_path, "20250101-000000", age_s=1)  # older name, newer checkpoint
    make_run(tmp_path, "20270101-000000", ckpt=None)  # no checkpoint: not resumable
    assert resolve_run(str(tmp_path), None, "last") == (newer, str(newer / "checkpoints" / "last.ckpt"))


def test_last_without_any_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    make_run(tmp_path, "20270101-000000", ckpt=None)
    with pytest.raises(FileNotFoundError, match="--ckpt_path last: no run under .* has a checkpoint"):
        resolve_run(str(tmp_path), None, "last")


def test_a_checkpoint_continues_in_its_own_run_folder(tmp_path):
    run = make_run(tmp_path, "20260101-000000")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert resolve_run(str(tmp_path / "elsewhere"), None, ckpt) == (run, ckpt)
    foreign = tmp_path / "weights.ckpt"
    foreign.write_bytes(b"x")
    new_run, _ = resolve_run(str(tmp_path / "elsewhere"), None, str(foreign))
    assert new_run.parent == tmp_path / "elsewhere"  # a checkpoint from outside any run: a new run folder


def test_an_explicit_run_dir_is_created_or_continued(tmp_path):
    assert resolve_run(None, str(tmp_path / "mine"), None) == (tmp_path / "mine", None)
    run = make_run(tmp_path, "mine2")
    make_run(tmp_path, "unused")
    hpc = run / "hpc_ckpt_1.ckpt"  # Lightning's SLURM checkpoint, newer than last.ckpt
    hpc.write_bytes(b"x")
    assert resolve_run(None, str(run), None) == (run, str(hpc))


def test_a_slurm_job_keeps_its_folder_across_a_requeue(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    run, ckpt = resolve_run(str(tmp_path), None, None)
    assert run == tmp_path / "slurm-4242-step0" and ckpt is None
    make_run(tmp_path, "slurm-4242-step0")  # the first attempt checkpointed, then the job was requeued
    assert resolve_run(str(tmp_path), None, None) == (run, str(run / "checkpoints" / "last.ckpt"))
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: a folder per launch
    assert resolve_run(str(tmp_path), None, None)[0].name[:8].isdigit()


def test_ranks_started_by_lightning_take_rank_zeros_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "chosen"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_run(str(tmp_path), None, None)[0] == tmp_path / "chosen"


def test_a_run_dir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="--run_dir .* is a file; name a folder"):
        resolve_run(None, str(tmp_path / "a_file"), None)
