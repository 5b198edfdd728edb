"""GAN training under DDP with 2 CPU processes (gloo): no unused-parameter errors, identical weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from genlit.metrics.evaluators import ARGS_ENV
from tests.conftest import EXPERIMENTS, REPO
from tests.integration.helpers import fit_on_two_ranks

DCGAN_TINY = [  # conv nets with BatchNorm in G and D, 8 channels wide, on the offline MNIST copy
    "--config", str(EXPERIMENTS / "gan" / "dcgan_mnist.yaml"),
    "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {save_last: true}}]",
    "--model.init_args.generator.init_args.width", "8", "--model.init_args.discriminator.init_args.width", "8",
    "--data.init_args.batch_size", "16",
]  # fmt: skip
TOY_WGAN_GP = [
    "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"), "--data.init_args.num_train", "2048",
    "--model.init_args.loss", "wasserstein", "--model.init_args.gp_weight", "10", "--model.init_args.n_critic", "2",
]  # fmt: skip


@pytest.mark.parametrize(
    "run_args",
    [
        DCGAN_TINY,
        pytest.param(TOY_WGAN_GP, marks=pytest.mark.slow),  # 25 s on 2 cores: the penalty's double backward
    ],
    ids=["dcgan_batchnorm", "wgan_gp"],
)
def test_two_cpu_ranks_end_with_identical_generators(tmp_path, data_dir, run_args):
    """G, D, the EMA and their BatchNorm statistics end identical on both ranks (each step all-reduces one net)."""
    probe = {"class_path": "tests.integration.ddp_probe.SaveGeneratorWeights", "init_args": {"dirpath": str(tmp_path)}}
    if run_args is DCGAN_TINY:
        run_args = [*run_args, "--data.init_args.dataset", str(data_dir / "mnist")]
    ranks = fit_on_two_ranks(tmp_path, [*run_args, "--trainer.logger", "false"], 24, probe)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for part in ("generator", "discriminator", "ema"):
        for key, value in ranks[0][part].items():
            torch.testing.assert_close(value, ranks[1][part][key], rtol=0, atol=0, msg=f"{part}.{key} differs")
    assert any((tmp_path / "runs").rglob("last.ckpt"))


def test_sample_quality_under_two_ranks_equals_one_process(tmp_path):
    from tests.integration.ddp_quality_probe import features, quality

    out = tmp_path / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               str(REPO / "tests" / "integration" / "ddp_quality_probe.py"), str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    gathered = json.loads(out.read_text())
    single = quality(*features(0))
    assert gathered == pytest.approx(single, rel=1e-9, abs=1e-12)


@pytest.mark.slow  # 30 s on 2 cores; the GAN and sampling DDP tests keep DDP in the default run
def test_language_model_under_two_cpu_ranks(tmp_path, data_dir):
    """Both ranks build or load one tokenizer, end with identical weights and report the same synced val metrics."""
    probe = {"class_path": "tests.integration.ddp_probe.SaveNetWeights", "init_args": {"dirpath": str(tmp_path)}}
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config",
               str(EXPERIMENTS / "autoregressive" / "gpt_shakespeare_char_cpu.yaml"),
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.max_steps", "6", "--trainer.val_check_interval", "6", "--trainer.limit_val_batches", "3",
               "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(tmp_path / "runs"), "--data.init_args.cache_dir", str(tmp_path / "c"),
               f"--trainer.callbacks+={json.dumps(probe)}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["tokenizer"] == ranks[1]["tokenizer"]
    for key, value in ranks[0]["net"].items():
        torch.testing.assert_close(value, ranks[1]["net"][key], rtol=0, atol=0, msg=f"net.{key} differs")
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and "val/bits_per_char" in ranks[0]["metrics"]


def test_torchrun_ranks_write_one_run_folder(tmp_path):
    """Ranks that torchrun starts (not Lightning's launcher) agree on the run folder through torchrun's store."""
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
               "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"),
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.max_steps", "6", "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = root.iterdir()
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()


@pytest.mark.slow  # 43 s on 2 cores; tests/unit/test_sample_writer.py covers the writer and the rank ranges
def test_sampling_on_two_ranks_writes_what_one_process_writes(tmp_path):
    """genlit sample --devices 2: Lightning's predict loop on 2 CPU ranks, one .npz (and shards) equal to one process's
    draw with the same seed, conditional labels included."""
    root = tmp_path / "runs"
    fit = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"),
           "--model.init_args.conditional", "true", "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0",
           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
           str(root)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENLIT_RUN_DIR", None)
    assert subprocess.run(fit, cwd=tmp_path, env=env, capture_output=True, timeout=300).returncode == 0
    (ckpt,) = root.glob("*/checkpoints/last.ckpt")
    sample = [sys.executable, "-m", "genlit.cli", "sample", "--ckpt", str(ckpt), "--num", "45", "--batch-size", "7",
              "--seed", "3", "--device", "cpu"]  # fmt: skip
    one = subprocess.run([*sample, "--out", str(tmp_path / "one.npz")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*sample, "--out", str(tmp_path / "two.npz"), "--devices", "2"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    np.testing.assert_array_equal(b["arr_1"], np.arange(45) % 8)
    assert (tmp_path / "two.rank0.npz").is_file() and (tmp_path / "two.rank1.npz").is_file()


@pytest.mark.slow  # about 100 s on 2 cores: two ranks, an evaluator trained from an empty cache, FID
def test_a_missing_evaluator_is_trained_once_by_rank_zero_and_shared(tmp_path, mnist_dir):
    """vae_mnist on 2 CPU ranks with an empty cache: global rank 0 trains the evaluator (its one line) while rank 1
    waits in the broadcast (no deadlock), both measure val/fid with it, and the cache holds one entry."""
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENTS / "vae" / "vae_mnist.yaml"),
               "--data.init_args.dataset", str(mnist_dir), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--trainer.max_epochs", "5", "--trainer.max_steps", "-1",
               "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
               "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
               "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GENLIT_CACHE_DIR": str(cache),
           ARGS_ENV: "--trainer.max_steps 2 --trainer.limit_val_batches 1"}  # fmt: skip
    env.pop("GENLIT_RUN_DIR", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("training the evaluator mnist_classifier once") == 1, result.stdout[-3000:]
    assert len(list((cache / "evaluators").glob("*.ckpt"))) == 1
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    assert "val/fid" in metrics.read_text().splitlines()[0]
