"""The PixelCNN family end to end through ``genlit``: fit a tiny net on binarized MNIST, test it (the exact NLL in
nats and bits/dim), sample it pixel by pixel with every cache, the 8-bit categorical experiment, and clear errors.
(Every config under experiments/pixelcnn instantiates in tests/test_experiments.py and keeps the family contract in
tests/test_family_contract.py.)"""

import math
import re

import numpy as np
import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import fit, mnist_args

TINY = ["--model.init_args.net.init_args.channels", "8", "--model.init_args.net.init_args.layers", "2",
        "--model.init_args.net.init_args.head_channels", "8", "--data.init_args.batch_size", "16"]  # fmt: skip
FEW = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1",
       "--trainer.log_every_n_steps", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, mnist_dir):
    return fit("pixelcnn/pixelcnn_mnist_binary.yaml", tmp_path_factory.mktemp("pixelcnn"), *mnist_args(mnist_dir),
               *TINY, *FEW)  # fmt: skip


def test_fit_writes_a_checkpoint_samples_and_the_nll_curves(binary_run):
    ckpt = torch.load(binary_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and ckpt["hyper_parameters"]["data_shape"] == (1, 28, 28)
    assert list((binary_run / "samples").glob("*.png"))  # SampleGrid at the end of training
    header = (binary_run / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/nll", "train/bits_per_dim", "val/nll", "val/bits_per_dim"):
        assert key in header, header


def test_test_reports_the_exact_nll_in_nats_and_bits_per_dim(binary_run, tmp_path, capsys):
    args = ["test", "--config", str(binary_run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--ckpt_path", str(binary_run / "checkpoints" / "last.ckpt"), "--trainer.limit_test_batches", "2"]
    main(args + ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    values = {key: float(value) for key, value in re.findall(r"(test/nll\w*)\s*│\s*([\d.]+)", out)}
    assert set(values) == {"test/nll", "test/nll_bits_per_dim"}, out
    assert 100 < values["test/nll"] < 784 * math.log(2) * 1.2  # a few steps: between a model and a coin's 543 nats
    assert values["test/nll_bits_per_dim"] == pytest.approx(values["test/nll"] / (784 * math.log(2)), rel=1e-4)


def test_sample_draws_binary_digits_the_same_with_every_cache(binary_run, tmp_path, capsys):
    ckpt = str(binary_run / "checkpoints" / "last.ckpt")
    main(["sample", "--ckpt", ckpt, "--num", "4", "--out", str(tmp_path / "x.npz")])
    samples = np.load(tmp_path / "x.npz")["arr_0"]
    assert samples.shape == (4, 28, 28, 1) and samples.dtype == np.uint8 and set(np.unique(samples)) <= {0, 255}
    assert (tmp_path / "x.png").is_file() and "wrote" in capsys.readouterr().out
    for cache, batch in (("rows", "4"), ("none", "2"), ("stacks", "1")):
        out = tmp_path / f"{cache}.npz"
        main(["sample", "--ckpt", ckpt, "--num", "4", "--out", str(out), "--cache", cache, "--batch-size", batch])
        assert np.array_equal(np.load(out)["arr_0"], samples), cache


def test_unknown_cache_is_one_line_naming_the_choices(binary_run, tmp_path, capsys):
    args = ["sample", "--ckpt", str(binary_run / "checkpoints" / "last.ckpt"), "--num", "1", "--cache", "pixels"]
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--cache" in err and "stacks" in err and "rows" in err, err
    assert not (tmp_path / "x.npz").exists()


def test_categorical_experiment_fits_and_samples_grey_levels(tmp_path, mnist_dir):
    run = fit("pixelcnn/pixelcnn_mnist_256.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *TINY,
              "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")  # fmt: skip
    out = tmp_path / "grey.npz"
    main(["sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", "2", "--out", str(out)])
    samples = np.load(out)["arr_0"]
    assert samples.shape == (2, 28, 28, 1) and len(np.unique(samples)) > 2  # grey levels, not only black and white


def test_unknown_likelihood_is_a_clear_error(mnist_dir, tmp_path, capsys):
    args = ["fit", "--config", str(EXPERIMENTS / "pixelcnn" / "pixelcnn_mnist_binary.yaml"), *mnist_args(mnist_dir)]
    args += ["--model.init_args.likelihood", "gaussian", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert "--model.likelihood" in err and "bernoulli" in err and "categorical" in err
