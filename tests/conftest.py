"""Shared fixtures: the offline data directory and quiet, offline loggers."""

import os
from pathlib import Path

import numpy as np
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


def speaker_corpora(config: Path, folder: Path, data_dir: Path) -> None:
    """Write the corpora that the text transfer experiments (experiments/finetune/gpt_*) read from
    ``runs/finetune/speakers/`` relative to the working directory, as ``python -m genlit.data.speakers`` does,
    under ``folder`` (the test's working directory); nothing for other experiments."""
    from genlit.data.speakers import write_speaker_corpora

    if "runs/finetune/speakers/" in config.read_text():
        write_speaker_corpora(data_dir / "tinyshakespeare" / "input.txt", folder=folder / "runs/finetune/speakers")


def code_file(folder: Path, num: int = 200, grid: tuple[int, int] = (7, 7), num_codes: int = 256) -> Path:
    """A file of random code grids (``arr_0`` int64 (num, *grid) in 0..num_codes-1), as ``genlit encode`` writes, for
    the experiments whose TokenSequenceDataModule reads codes that a trained VQ-VAE would export."""
    codes = np.random.default_rng(0).integers(0, num_codes, size=(num, *grid), dtype=np.int64)
    path = folder / "codes.npz"
    np.savez(path, arr_0=codes, arr_1=np.full(num, -1, dtype=np.int64))
    return path


def autoencoder_checkpoint(folder: Path, data_shape: tuple[int, ...] = (1, 28, 28)) -> Path:
    """A tiny untrained first-stage autoencoder's checkpoint (as ``genlit fit`` of autoencoder_mnist.yaml writes it:
    weights, hyperparameters, class path), for the latent diffusion experiments (experiments/diffusion/ldm_*)."""
    from functools import partial

    import lightning
    import torch

    from genlit.families.autoencoder import KLAutoencoder
    from genlit.nets.autoencoder import KLAutoencoderNet

    torch.manual_seed(0)
    net = partial(KLAutoencoderNet, latent_channels=3, width=8, channel_mults=(1, 2, 2), groups=4)
    model = KLAutoencoder(net, data_shape=data_shape)
    path = folder / "autoencoder.ckpt"
    hparams = {"_class_path": "genlit.families.autoencoder.KLAutoencoder", **model.hparams}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    return path
