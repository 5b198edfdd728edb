"""Latent diffusion end to end through ``genlit``: fit the autoencoder, fit the diffusion on its latents, sample
(without the autoencoder's file), and the one-line errors of a bad first stage."""

import shutil

import numpy as np
import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import error_line, fit, mnist_args

FEW = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "16"]
TINY_AE = [
    "--model.init_args.net.init_args.width", "8", "--model.init_args.net.init_args.groups", "4",
    "--model.init_args.discriminator.init_args.width", "8", "--model.init_args.disc_start", "1",
]  # fmt: skip
TINY_LDM = [
    "--model.init_args.net.init_args.hidden_size", "16", "--model.init_args.net.init_args.depth", "1",
    "--model.init_args.sampler.init_args.num_steps", "2", "--model.init_args.schedule.init_args.num_steps", "50",
]  # fmt: skip


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, mnist_dir):
    return fit("diffusion/autoencoder_mnist.yaml", tmp_path_factory.mktemp("ae"), *mnist_args(mnist_dir), *FEW,
               *TINY_AE)  # fmt: skip


@pytest.fixture(scope="module")
def ldm_run(ae_run, tmp_path_factory, mnist_dir):
    ae = tmp_path_factory.mktemp("first_stage") / "autoencoder.ckpt"
    shutil.copy(ae_run / "checkpoints" / "last.ckpt", ae)
    run = fit("diffusion/ldm_mnist.yaml", tmp_path_factory.mktemp("ldm"), *mnist_args(mnist_dir), *FEW, *TINY_LDM,
              "--model.init_args.autoencoder", str(ae))  # fmt: skip
    ae.unlink()  # the latent diffusion checkpoint holds the autoencoder
    return run


def test_autoencoder_fits_with_its_discriminator_and_tests(ae_run, mnist_dir, tmp_path, capsys):
    checkpoint = torch.load(ae_run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert int(checkpoint["state_dict"]["_ae_steps"]) >= 2 and len(checkpoint["optimizer_states"]) == 2
    main(["test", "--config", str(EXPERIMENTS / "diffusion/autoencoder_mnist.yaml"), *mnist_args(mnist_dir), *TINY_AE,
          "--ckpt_path", str(ae_run / "checkpoints" / "last.ckpt"), "--trainer.limit_test_batches", "1",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])  # fmt: skip
    assert "test/recon" in capsys.readouterr().out


def test_ldm_samples_images_without_the_autoencoder_file(ldm_run, tmp_path):
    checkpoint = torch.load(ldm_run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert float(checkpoint["state_dict"]["latent_scale"]) > 0  # measured on the first batch
    assert not any(k.startswith("autoencoder.discriminator") for k in checkpoint["state_dict"])
    out = tmp_path / "s.npz"
    main(["sample", "--ckpt", str(ldm_run / "checkpoints" / "last.ckpt"), "--num", "4", "--out", str(out)])
    arrays = np.load(out)
    assert arrays["arr_0"].shape == (4, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8


@pytest.mark.parametrize(
    "first_stage, data, message",
    [
        (None, [], "LatentDiffusion needs its first-stage autoencoder; pass --model.init_args.autoencoder"),
        ("ldm", [], "is not a KLAutoencoder checkpoint (it holds LatentDiffusion); pass --model.init_args.autoencoder"),
        ("ae", ["--data.init_args.image_size", "32"], "trained on images of shape (1, 28, 28), but the data here"),
    ],
    ids=["no-autoencoder", "not-an-autoencoder", "other-data-shape"],
)
def test_bad_first_stage_is_one_clear_line(ae_run, ldm_run, mnist_dir, tmp_path, first_stage, data, message, capsys):
    path = {None: "null", "ldm": ldm_run / "checkpoints" / "last.ckpt", "ae": ae_run / "checkpoints" / "last.ckpt"}
    line = error_line(capsys, "fit", "--config", str(EXPERIMENTS / "diffusion/ldm_mnist.yaml"), *mnist_args(mnist_dir),
                      "--trainer.default_root_dir", str(tmp_path), "--model.init_args.autoencoder",
                      str(path[first_stage]), *data)  # fmt: skip
    assert message in line, line
