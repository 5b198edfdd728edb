"""Data larger than memory in real runs: ``storage: stream`` under DDP (2 CPU ranks) gives each rank a disjoint
share and the same number of steps every epoch; ``storage: disk`` trains with decoding worker processes."""

import json
import os
import subprocess
import sys

import datasets
import pytest

from tests.conftest import EXPERIMENTS, REPO
from tests.integration.helpers import fit

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def small_mnist(data_dir, tmp_path_factory):
    """640 train and 128 test MNIST rows as parquet, in two unequal train shards."""
    raw = datasets.load_dataset(str(data_dir / "mnist"))
    root = tmp_path_factory.mktemp("small_mnist")
    raw["train"].select(range(400)).to_parquet(str(root / "train-00000-of-00002.parquet"))
    raw["train"].select(range(400, 640)).to_parquet(str(root / "train-00001-of-00002.parquet"))
    raw["test"].select(range(128)).to_parquet(str(root / "test-00000-of-00001.parquet"))
    return root


@pytest.mark.slow  # about a minute on 2 cores (two ranks, two epochs); the unit tests cover the pieces
def test_a_stream_under_ddp_gives_ranks_disjoint_shares_and_equal_epochs(small_mnist, tmp_path):
    probe = {"class_path": "tests.integration.ddp_probe.RecordTrainImages", "init_args": {"dirpath": str(tmp_path)}}
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / "vae" / "vae_mnist.yaml"),
               "--data.init_args.dataset", str(small_mnist), "--data.init_args.storage", "stream",
               "--data.init_args.batch_size", "32", "--data.init_args.shuffle_buffer", "64",
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.max_epochs", "2", "--trainer.max_steps", "-1", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.callbacks+=" + json.dumps(probe),
               *QUIET]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    per_epoch = int(640 * 0.95) // 64  # one pass over the train rows less the validation carve, shared out
    assert [r["global_step"] for r in ranks] == [2 * per_epoch] * 2
    for epoch in ("0", "1"):
        first, second = (set(r["seen"][epoch]) for r in ranks)
        assert len(ranks[0]["seen"][epoch]) == len(ranks[1]["seen"][epoch]) == per_epoch * 32
        assert not first & second  # no image on both ranks in one epoch
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # reshuffled between epochs


@pytest.mark.slow  # a real fit with worker processes; tests/unit/test_image_storage.py covers the batches
def test_disk_storage_trains_with_decoding_workers(data_dir, tmp_path):
    run_dir = fit("vae/vae_mnist.yaml", tmp_path, "--data.init_args.dataset", str(data_dir / "mnist"),
                  "--data.init_args.storage", "disk", "--data.init_args.num_workers", "2",
                  "--trainer.max_steps", "6", "--trainer.limit_val_batches", "2",
                  "--trainer.logger", "false")  # fmt: skip
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
