"""Run ``genlit`` in-process for the integration tests and find what a run wrote."""

from pathlib import Path

from genlit.cli import main
from tests.conftest import EXPERIMENTS

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
