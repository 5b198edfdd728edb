"""Fault tolerance: a run killed with kill -9 anywhere (mid-epoch included) and resumed with --ckpt_path last
ends where the uninterrupted run ends: the same weights, EMA and metrics, in the same run folder."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import EXPERIMENTS, REPO

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
CASES = {
    # manual optimization: D and G steps, n_critic 2; 10 batches an epoch; kill mid-epoch
    "gan": (
        [
            "gan/toy_ring8.yaml",
            "--model.init_args.n_critic",
            "2",
            "--data.init_args.num_train",
            "2560",
            "--trainer.max_steps",
            "45",
            "--trainer.val_check_interval",
            "10",
        ],
        7,
        29,
    ),  # fmt: skip
    # automatic optimization, dynamic binarization (random per step), 12 batches an epoch
    "vae": (
        [
            "vae/vae_mnist.yaml",
            "--trainer.max_steps",
            "30",
            "--trainer.limit_train_batches",
            "12",
            "--trainer.limit_val_batches",
            "1",
            "--data.init_args.batch_size",
            "32",
        ],
        8,
        19,
    ),  # fmt: skip
}


def genlit(args, root, env, *extra):
    config, *overrides = args
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / config), *overrides, *QUIET,
               "--trainer.default_root_dir", str(root), "--trainer.logger", "false", *extra]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)  # env: the evaluator cache


def callback(class_path, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": class_path, "init_args": init_args})


@pytest.mark.parametrize("family", ["gan", pytest.param("vae", marks=pytest.mark.slow)])
def test_a_killed_run_resumes_to_the_uninterrupted_result(family, tmp_path, data_dir):
    args, every, kill_step = CASES[family]
    if family == "vae":
        args = [*args, "--data.init_args.dataset", str(data_dir / "mnist")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GENLIT_DEBUG": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    checkpoints = callback("lightning.pytorch.callbacks.ModelCheckpoint", every_n_train_steps=every,
                           save_last=True, save_top_k=0)  # fmt: skip
    end = "tests.integration.fault_probe.SaveEndState"

    whole = genlit(args, tmp_path / "whole", env, checkpoints, callback(end, path=str(tmp_path / "whole_end")))
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = genlit(args, tmp_path / "runs", env, checkpoints, callback("tests.integration.fault_probe.KillAt",
                                                                          step=kill_step))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < last["global_step"] < kill_step  # the kill lost the steps since the last checkpoint

    resumed = genlit(args, tmp_path / "runs", env, checkpoints, callback(end, path=str(tmp_path / "resumed_end")),
                     "--ckpt_path", "last")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]  # the same run folder

    expected, got = torch.load(tmp_path / "whole_end.pt"), torch.load(tmp_path / "resumed_end.pt")
    assert expected.keys() == got.keys() and any(k.startswith("ema.") for k in got) == (family == "gan")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{key} differs")
    whole_record = json.loads((tmp_path / "whole_end.json").read_text())
    resumed_record = json.loads((tmp_path / "resumed_end.json").read_text())
    assert resumed_record["global_step"] == whole_record["global_step"]
    assert resumed_record["metrics"] == pytest.approx(whole_record["metrics"], rel=1e-6, nan_ok=True)
    assert resumed_record["run_dir"] == str(run_dir)
