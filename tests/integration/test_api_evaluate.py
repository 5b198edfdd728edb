"""genlit.evaluate from Python: the record ``genlit evaluate`` writes, for an .npz, images in memory, a run folder
or a model; bad input is one clear error."""

import json

import numpy as np
import pytest
import torch

import genlit
from genlit.cli import main
from genlit.data.images import ImageDataModule
from tests.integration.helpers import fit, mnist_args

EVALUATOR = "evaluator:mnist_classifier"


@pytest.fixture(scope="module")
def real_digits(mnist_dir, mnist_evaluator):
    """300 real training digits (uint8 (N, 1, 28, 28)) and their labels; the session's evaluator is in the cache."""
    data = ImageDataModule(str(mnist_dir))
    data.prepare_data()
    data.setup("fit")
    images, labels = data.split_tensors("train")
    return images[:300], labels[:300]


def test_evaluate_gives_the_command_lines_record_for_files_and_tensors(real_digits, mnist_dir, tmp_path):
    images, labels = real_digits
    npz = tmp_path / "real.npz"
    np.savez(npz, images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    common = {"cache_dir": tmp_path / "cache", "kid_subset_size": 100}
    main(["evaluate", "--samples", str(npz), "--data", str(mnist_dir), "--extractor", EVALUATOR,
          "--cache-dir", str(tmp_path / "cache"), "--kid-subset-size", "100"])  # fmt: skip
    written = json.loads(npz.with_suffix(".eval.json").read_text())

    record = genlit.evaluate(npz, str(mnist_dir), EVALUATOR, out=tmp_path / "api.json", **common)
    assert record == written == json.loads((tmp_path / "api.json").read_text())

    as_floats = images.float() / 127.5 - 1  # what model.sample returns: (N, C, H, W) in [-1, 1]
    in_memory = genlit.evaluate(as_floats, str(mnist_dir), EVALUATOR, labels=labels, **common)
    assert in_memory["metrics"] == pytest.approx(written["metrics"]) and in_memory["num_samples"] == 300
    unlabelled = genlit.evaluate(images.permute(0, 2, 3, 1).numpy(), str(mnist_dir), EVALUATOR, **common)
    assert unlabelled["metrics"]["fid"] == pytest.approx(written["metrics"]["fid"])
    assert "label_accuracy" not in unlabelled["metrics"]


def test_evaluate_draws_from_a_run_folder_as_the_command_line_does(mnist_dir, tmp_path):
    overrides = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", "--model.init_args.iw_samples", "4"]
    run = fit("vae/vae_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *overrides)
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "cli.json"
    main(["evaluate", "--ckpt", str(ckpt), "--num", "120", "--data", str(mnist_dir), "--extractor", EVALUATOR,
          "--cache-dir", str(tmp_path / "cache"), "--kid-subset-size", "50", "--skip-nll", "--seed", "3",
          "--out", str(out)])  # fmt: skip
    cli = json.loads(out.read_text())["metrics"]
    common = {"num": 120, "seed": 3, "nll": False, "cache_dir": tmp_path / "cache", "kid_subset_size": 50}
    from_folder = genlit.evaluate(run, str(mnist_dir), EVALUATOR, **common)
    assert from_folder["metrics"] == pytest.approx(cli) and "nll_bits_per_dim" not in cli
    from_model = genlit.evaluate(genlit.load(ckpt), str(mnist_dir), EVALUATOR, **common)
    assert from_model["metrics"] == pytest.approx(cli) and from_model["source"] == "VAE"


@pytest.mark.parametrize(
    "samples, extractor, message",
    [
        (torch.zeros(4, 2), EVALUATOR, "evaluate needs images: float (N, C, H, W) in [-1, 1] or uint8 (N, H, W, C)"),
        (torch.zeros(4, 1, 28, 28), None, "extractor= is required for images"),
        ("nowhere.npz", EVALUATOR, "--samples nowhere.npz: no such file"),
    ],
)
def test_bad_input_is_one_clear_error(mnist_dir, mnist_evaluator, samples, extractor, message):
    with pytest.raises((ValueError, FileNotFoundError)) as failure:
        genlit.evaluate(samples, str(mnist_dir), extractor)
    assert message in str(failure.value) and "\n" not in str(failure.value)
