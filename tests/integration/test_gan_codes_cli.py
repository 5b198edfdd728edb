"""ACGAN and InfoGAN through the ``genlit`` command: fit a few steps, sample with fixed codes or a label, and the
one-line errors of bad options."""

import numpy as np
import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import fit, fit_on_two_ranks, mnist_args
from tests.integration.test_errors import genlit_error

TINY = [  # 8-channel nets, a few steps of batch 16, only the last checkpoint
    "--model.init_args.generator.init_args.width", "8", "--model.init_args.discriminator.init_args.width", "8",
    "--data.init_args.batch_size", "16", "--trainer.max_steps", "4", "--trainer.limit_val_batches", "1",
    "--trainer.logger", "false",
    "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {save_last: true}}]",
]  # fmt: skip


@pytest.fixture(scope="module")
def infogan_ckpt(tmp_path_factory, mnist_dir) -> str:
    run = fit("gan/infogan_mnist.yaml", tmp_path_factory.mktemp("infogan"), *mnist_args(mnist_dir), *TINY)
    return str(run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def acgan_ckpt(tmp_path_factory, mnist_dir) -> str:
    run = fit("gan/acgan_mnist.yaml", tmp_path_factory.mktemp("acgan"), *mnist_args(mnist_dir), *TINY)
    return str(run / "checkpoints" / "last.ckpt")


def sample(ckpt: str, out, *options: str) -> np.ndarray:
    main(["sample", "--ckpt", ckpt, "--num", "6", "--seed", "4", "--batch-size", "4", "--out", str(out), *options])
    return np.load(out)["arr_0"]


def test_infogan_samples_with_fixed_codes(infogan_ckpt, tmp_path):
    threes = sample(infogan_ckpt, tmp_path / "threes.npz", "--category", "3", "--continuous", "[0.5,null]")
    assert threes.shape == (6, 28, 28, 1) and threes.dtype == np.uint8
    assert (tmp_path / "threes.png").is_file()
    again = sample(infogan_ckpt, tmp_path / "again.npz", "--category", "3", "--continuous", "[0.5,null]")
    np.testing.assert_array_equal(threes, again)  # same seed and codes, same samples
    sevens = sample(infogan_ckpt, tmp_path / "sevens.npz", "--category", "7", "--continuous", "[0.5,null]")
    assert not np.array_equal(threes, sevens)
    assert "arr_1" not in np.load(tmp_path / "threes.npz")  # unconditional: no labels


def test_infogan_bad_codes_are_one_clear_line(infogan_ckpt, tmp_path, capsys):
    base = ["sample", "--ckpt", infogan_ckpt, "--num", "4", "--out", str(tmp_path / "x.npz")]
    assert "category must be an integer in [0, 10)" in genlit_error(capsys, [*base, "--category", "10"])
    line = genlit_error(capsys, [*base, "--continuous", "[0.5]"])
    assert "continuous must be 2 values, one per continuous code" in line
    assert "--label is only for class-conditional models" in genlit_error(capsys, [*base, "--label", "3"])
    assert not (tmp_path / "x.npz").exists()


def test_acgan_samples_a_label_and_refuses_codes(acgan_ckpt, tmp_path, capsys):
    main(["sample", "--ckpt", acgan_ckpt, "--num", "5", "--label", "4", "--out", str(tmp_path / "fours.npz")])
    arrays = np.load(tmp_path / "fours.npz")
    assert arrays["arr_0"].shape == (5, 28, 28, 1) and (arrays["arr_1"] == 4).all()
    base = ["sample", "--ckpt", acgan_ckpt, "--num", "4", "--out", str(tmp_path / "x.npz")]
    line = genlit_error(capsys, [*base, "--continuous", "[0.5,0.1]"])
    assert "unrecognized arguments: --continuous" in line and "ACGAN checkpoint are --truncation" in line


def test_acgan_without_labelled_data_is_one_clear_line(capsys, tmp_path, mnist_dir):
    argv = ["fit", "--config", str(EXPERIMENTS / "gan" / "acgan_mnist.yaml"), *mnist_args(mnist_dir), *TINY,
            "--data.init_args.label_column", "null", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    line = genlit_error(capsys, argv)
    assert "ACGAN needs labelled data with at least 2 classes" in line and "--data.label_column" in line


@pytest.mark.slow  # 27 s each on 2 shared cores; tests/unit/test_{acgan,infogan}.py check what each step syncs
@pytest.mark.parametrize("experiment", ["infogan_mnist", "acgan_mnist"])
def test_two_cpu_ranks_end_with_identical_nets_and_heads(experiment, tmp_path, mnist_dir):
    """Under DDP the auxiliary head (ACGAN's classifier, InfoGAN's Q) is synced with D in the D step: G, D with its
    head, the EMA and the BatchNorm statistics end identical on both ranks. Except ACGAN's D BatchNorm statistics:
    the last G step's pass through D moves them with each rank's own labels (the next D step would take rank 0's,
    as DDP's buffer broadcast does before a forward)."""
    probe = {"class_path": "tests.integration.ddp_probe.SaveGeneratorWeights", "init_args": {"dirpath": str(tmp_path)}}
    config = ["--config", str(EXPERIMENTS / "gan" / f"{experiment}.yaml"), *mnist_args(mnist_dir), *TINY]
    ranks = fit_on_two_ranks(tmp_path, config, 8, probe)
    assert ranks[0]["world_size"] == 2 and any(key.startswith("aux.") for key in ranks[0]["discriminator"])
    for part in ("generator", "discriminator", "ema"):
        for key, value in ranks[0][part].items():
            if experiment == "acgan_mnist" and part == "discriminator" and ".running_" in key:
                continue
            torch.testing.assert_close(value, ranks[1][part][key], rtol=0, atol=0, msg=f"{part}.{key} differs")
