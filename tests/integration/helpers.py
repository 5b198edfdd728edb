"""Run ``genlit`` in-process (or on two DDP ranks) for the integration tests and find what a run wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS, REPO

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit(config: str | Path, root: Path, *overrides: str) -> Path:
    """``genlit fit`` a config (a path, or relative to experiments/) under ``root``; returns the run dir."""
    before = set(root.glob("*")) if root.exists() else set()
    path = Path(config) if Path(config).is_absolute() else EXPERIMENTS / config
    args = ["fit", "--config", str(path), "--trainer.default_root_dir", str(root)]
    main(args + FAST + list(overrides))
    (run_dir,) = set(root.glob("*")) - before
    return run_dir


def mnist_args(mnist_dir: Path) -> list[str]:
    """Overrides that read the offline MNIST copy."""
    return ["--data.init_args.dataset", str(mnist_dir)]


def fit_on_two_ranks(tmp_path: Path, run_args: list[str], max_steps: int, probe: dict) -> list[dict]:
    """``genlit fit`` with ``run_args`` on two CPU ranks (DDP, one thread each) for ``max_steps``, with the callback
    ``probe`` (a class_path/init_args dict) that saves each rank's state to ``tmp_path/rank{r}.pt``; returns both."""
    command = [sys.executable, "-m", "genlit.cli", "fit", *run_args,
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.max_steps", str(max_steps), "--trainer.limit_val_batches", "0",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs"),
               f"--trainer.callbacks+={json.dumps(probe)}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def error_line(capsys, *argv: str) -> str:
    """The one line ``genlit argv`` prints for bad input (exit status 2, no traceback, the message on one line)."""
    capsys.readouterr()  # drop what earlier steps printed
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("genlit: error: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]
