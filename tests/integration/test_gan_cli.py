"""The GAN family end to end through the ``genlit`` command: fit, resume, sample, offline W&B."""

import shutil

import numpy as np
import pytest
import torch

from genlit.cli import main
from genlit.commands.runs import newest_checkpoint
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import FAST, fit, mnist_args


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return fit("gan/toy_ring8.yaml", root, "--trainer.max_steps", "40", "--trainer.val_check_interval", "10")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("mnist")
    overrides = ["--trainer.max_steps", "6", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "16"]
    return fit("gan/dcgan_mnist.yaml", root, *mnist_args(mnist_dir), *overrides)


def test_toy_fit_writes_run_directory(toy_run):
    assert (toy_run / "config.yaml").is_file()
    assert (toy_run / "checkpoints" / "last.ckpt").is_file()
    assert list((toy_run / "samples").glob("*.png"))
    offline_runs = list((toy_run / "wandb").glob("offline-run-*"))
    assert offline_runs and list(offline_runs[0].glob("*.wandb"))


def test_global_step_counts_both_optimizers(toy_run):
    ckpt = torch.load(toy_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 40  # 20 batches x (1 D step + 1 G step)
    assert int(ckpt["state_dict"]["_generator_steps"]) == 20
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])


def test_toy_sample_writes_float_points(toy_run, tmp_path):
    out = tmp_path / "toy.npz"
    main(["sample", "--ckpt", str(toy_run / "checkpoints" / "last.ckpt"), "--num", "300", "--out", str(out)])
    arrays = np.load(out)
    assert arrays["arr_0"].dtype == np.float32 and arrays["arr_0"].shape == (300, 2)
    assert "arr_1" not in arrays
    assert out.with_suffix(".png").is_file()


def test_mnist_fit_and_sample(mnist_run, tmp_path):
    assert list((mnist_run / "wandb").glob("offline-run-*"))
    out = tmp_path / "digits.npz"
    args = ["--num", "10", "--out", str(out), "--batch-size", "4", "--seed", "3"]
    main(["sample", "--ckpt", str(mnist_run / "checkpoints" / "last.ckpt"), *args])
    first = np.load(out)["arr_0"]
    assert first.dtype == np.uint8 and first.shape == (10, 28, 28, 1)
    main(["sample", "--ckpt", str(mnist_run / "checkpoints" / "last.ckpt"), *args])
    np.testing.assert_array_equal(first, np.load(out)["arr_0"])  # same seed, same samples


def test_saved_config_reproduces_the_run(mnist_run, tmp_path):
    run = fit(mnist_run / "config.yaml", tmp_path, "--trainer.max_steps", "2")
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_step_count_in_the_checkpoints_run_folder(toy_run, tmp_path):
    run = tmp_path / "runs" / toy_run.name
    shutil.copytree(toy_run, run)  # a copy: the fixture's run stays as it is for the other tests
    args = ["fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"), "--trainer.max_steps", "60", *FAST]
    main([*args, "--trainer.default_root_dir", str(tmp_path / "elsewhere"), "--ckpt_path", str(run / "checkpoints" /
          "last.ckpt")])  # fmt: skip
    assert not (tmp_path / "elsewhere").exists()  # continued in its own folder, not a new one
    ckpt = torch.load(newest_checkpoint(run), weights_only=False)  # last-v1.ckpt: the copy moved the folder
    assert ckpt["global_step"] == 60
    assert int(ckpt["state_dict"]["_generator_steps"]) == 30


def test_conditional_sample_has_labels(mnist_dir, tmp_path):
    overrides = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "16"]
    run = fit("gan/sngan_hinge_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *overrides)
    out = tmp_path / "c.npz"
    main(["sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", "20", "--out", str(out)])
    arrays = np.load(out)
    assert arrays["arr_0"].shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(arrays["arr_1"], np.arange(20) % 10)


def test_bf16_mixed_on_cpu(tmp_path):
    run = fit(
        "gan/toy_ring8.yaml",
        tmp_path,
        "--trainer.max_steps",
        "10",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.limit_val_batches",
        "0",
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_stylegan_ada_fits_resumes_with_its_p_and_samples_truncated(tmp_path, mnist_dir):
    """A StyleGAN-style run with ADA through the CLI: the checkpoint holds p, a resume continues from it, and
    ``genlit sample --truncation`` draws from the checkpoint (weights_only loading, with the policy object)."""
    overrides = ["--trainer.max_steps", "8", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "8",
                 "--trainer.logger", "false", "--model.init_args.augment.init_args.speed_images", "16",
                 "--model.init_args.augment.init_args.interval", "1",
                 "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
                 "init_args: {save_last: true}}]"]  # fmt: skip
    run = fit("gan/stylegan_ada_mnist1k.yaml", tmp_path, *mnist_args(mnist_dir), *overrides)
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)["discriminator_augment"]
    assert saved["calls"] == 0 and saved["r_t"] is not None  # adjusted at every one of the 4 D steps
    main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_steps", "12", "--ckpt_path", str(last), *FAST])
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == 12 and int(resumed["state_dict"]["_discriminator_steps"]) == 6
    out = tmp_path / "truncated.npz"
    main(["sample", "--ckpt", str(last), "--num", "4", "--truncation", "0.5", "--out", str(out)])
    assert np.load(out)["arr_0"].shape == (4, 28, 28, 1)
