"""Shared fixtures: the offline data directory and quiet, offline loggers."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$GENLIT_DATA_DIR`` (the offline MNIST and Tiny Shakespeare copies)."""
    value = os.environ.get("GENLIT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("GENLIT_DATA_DIR is not set to the offline data folder (see README)")
    return Path(value)


@pytest.fixture(scope="session")
def mnist_dir(data_dir: Path) -> Path:
    """The offline MNIST parquet folder."""
    return data_dir / "mnist"
