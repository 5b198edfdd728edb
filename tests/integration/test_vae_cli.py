"""The VAE family end to end through ``genlit``: fit, test (IW bound, anomaly AUROC), sample, errors."""

import json
import re

import numpy as np
import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import fit, mnist_args

FEW = ["--trainer.max_steps", "6", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "32"]


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, mnist_dir):
    return fit("vae/cvae_mnist.yaml", tmp_path_factory.mktemp("cvae"), *mnist_args(mnist_dir), *FEW)


def test_fit_writes_latent_pictures_and_checkpoint(cvae_run):
    assert (cvae_run / "checkpoints" / "last.ckpt").is_file()
    for name in ("reconstruction", "interpolation", "traversal"):
        assert list((cvae_run / "latents").glob(f"{name}_step_*.png")), name
    assert list((cvae_run / "samples").glob("*.png"))


def test_conditional_samples_follow_the_label(cvae_run, tmp_path):
    out = tmp_path / "threes.npz"
    main(
        [
            "sample",
            "--ckpt",
            str(cvae_run / "checkpoints" / "last.ckpt"),
            "--num",
            "8",
            "--out",
            str(out),
            "--label",
            "3",
        ]
    )
    arrays = np.load(out)
    assert arrays["arr_0"].shape == (8, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    assert (arrays["arr_1"] == 3).all()


def test_test_reports_iw_nll_and_anomaly_auroc(tmp_path, mnist_dir, capsys):
    run = fit("vae/vae_anomaly_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *FEW)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    args = ["test", "--config", str(run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path / "test")]
    last = str(run / "checkpoints" / "last.ckpt")
    args += ["--ckpt_path", last, "--model.init_args.iw_samples", "8", "--model.init_args.anomaly_background", last]
    args += ["--trainer.limit_test_batches", "8", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(args)
    out = capsys.readouterr().out
    for key in ("test/nll", "test/nll_bits_per_dim", "test/elbo"):
        assert key in out, out
    for score in ("nll", "likelihood_ratio", "complexity", "reconstruction"):
        assert f"test/anomaly_auroc_{score}" in out, out
    # the model against itself as background: every ratio is 0, so the ratio cannot rank (AUROC 0.5)
    assert re.search(r"test/anomaly_auroc_likelihood_ratio\W+0\.5\b", out), out


def test_evaluate_scores_a_file_of_images(tmp_path, mnist_dir):
    from genlit.data.images import ImageDataModule

    run = fit("vae/vae_anomaly_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *FEW)
    dm = ImageDataModule(str(mnist_dir))
    dm.setup("test")
    x, y = dm.split_tensors("test", limit=40)
    images = tmp_path / "digits.npz"
    np.savez(images, x.permute(0, 2, 3, 1).numpy(), y.numpy())
    last = str(run / "checkpoints" / "last.ckpt")
    main(["evaluate", "--ckpt", last, "--anomaly", str(images), "--background", last, "--anomalous-classes", "[9]",
          "--batch-size", "16"])  # fmt: skip
    scores = np.load(tmp_path / "digits.scores.npz")
    assert sorted(scores.files) == ["complexity", "labels", "likelihood_ratio", "nll", "reconstruction"]
    assert scores["nll"].shape == (40,) and (scores["likelihood_ratio"] == 0).all()
    record = json.loads((tmp_path / "digits.scores.json").read_text())
    assert record["auroc"]["likelihood_ratio"] == 0.5 and 0 <= record["auroc"]["nll"] <= 1
    assert record["anomalous_classes"] == [9] and record["num_images"] == 40
    with pytest.raises(SystemExit):
        every_class = str(list(range(10)))
        main(["evaluate", "--ckpt", last, "--anomaly", str(images), "--anomalous-classes", every_class])


def test_train_split_excludes_the_held_out_digit(mnist_dir):
    from genlit.data.images import ImageDataModule

    dm = ImageDataModule(str(mnist_dir), held_out_classes=[9])
    dm.setup("fit")
    dm.setup("test")
    assert 9 not in dm._train.tensors[1] and 9 not in dm._val.tensors[1]
    assert (dm._test.tensors[1] == 9).any()


def test_cvae_on_label_less_data_is_a_clear_error(mnist_dir, tmp_path, capsys):
    args = ["fit", "--config", str(EXPERIMENTS / "vae" / "cvae_mnist.yaml"), *mnist_args(mnist_dir)]
    args += ["--data.init_args.label_column", "null", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        main(args)
    assert "conditional=True needs labelled data" in capsys.readouterr().err


def test_unknown_likelihood_is_a_clear_error(mnist_dir, tmp_path, capsys):
    args = ["fit", "--config", str(EXPERIMENTS / "vae" / "vae_mnist.yaml"), *mnist_args(mnist_dir)]
    args += ["--model.init_args.likelihood", "poisson", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert "--model.likelihood" in err and "bernoulli" in err and "gaussian_learned" in err
