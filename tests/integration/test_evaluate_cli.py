"""genlit's MNIST evaluator and ``genlit evaluate`` on real data: FID orders real, blurred and collapsed
image sets as it should; the CLI writes its table and JSON, caches reference features, and refuses bad input;
``evaluator:mnist_classifier`` is trained once per dataset (conftest.py's session cache) and then found."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlit.cli import main
from genlit.commands.evaluate import evaluate, reference_features
from genlit.data.images import ImageDataModule
from genlit.files import file_digest
from genlit.metrics.evaluators import evaluator, find_or_train, train_in_child
from genlit.metrics.extractors import make_extractor
from tests.integration.helpers import fit, mnist_args


@pytest.fixture(scope="module")
def classifier_ckpt(mnist_evaluator):
    """The session's evaluator (conftest.py: evaluator:mnist_classifier for 60 steps, in the session cache)."""
    return mnist_evaluator


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    data = ImageDataModule(str(mnist_dir))
    data.prepare_data()
    data.setup("fit")
    return data


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of uint8 images (N, 1, H, W) with torch ops."""
    radius = int(3 * sigma) + 1
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum())[None, None]  # (1, 1, K)
    x = images.float()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel[..., None, :])
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[..., :, None])
    return x.round().clamp(0, 255).to(torch.uint8)


def test_fid_ranks_real_blurred_and_collapsed_sets(classifier_ckpt, mnist, tmp_path):
    extractor = make_extractor(str(classifier_ckpt))
    reference = reference_features(extractor, mnist, "val", tmp_path)[:2]  # 450 held-out real images
    images, labels = mnist.split_tensors("train")
    real = images[:1000]

    def fid(x):
        return evaluate(x, None, extractor, reference, kid_subset_size=200)["fid"]

    blurred = [fid(blur(real, sigma)) for sigma in (0.7, 1.2, 2.0)]
    ones = images[labels == 1][:1000]
    collapsed = [fid(torch.cat([real[: int(1000 * (1 - p))], ones[: int(1000 * p)]])) for p in (0.3, 0.6, 0.9)]
    assert fid(real) < blurred[0] < blurred[1] < blurred[2], (fid(real), blurred)
    assert fid(real) < collapsed[0] < collapsed[1] < collapsed[2], (fid(real), collapsed)


def test_evaluate_command_writes_json_and_reuses_cached_references(classifier_ckpt, mnist, mnist_dir, tmp_path, capsys):
    images, labels = mnist.split_tensors("train")
    np.savez(tmp_path / "real.npz", images[:300].permute(0, 2, 3, 1).numpy(), labels[:300].numpy())
    args = ["evaluate", "--samples", str(tmp_path / "real.npz"), "--data", str(mnist_dir), "--extractor"]
    args += ["evaluator:mnist_classifier", "--cache-dir", str(tmp_path / "cache"), "--kid-subset-size", "100"]
    main(args)
    assert "training the evaluator" not in capsys.readouterr().out  # the session's, found in the cache
    first = json.loads((tmp_path / "real.eval.json").read_text())
    assert list((tmp_path / "cache").glob("*.pt"))
    main(args + ["--out", str(tmp_path / "again.json")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert first["metrics"] == again["metrics"]
    assert first["extractor"] == f"genlit-classifier:{file_digest(classifier_ckpt)}" and first["num_samples"] == 300
    assert first["reference"] == {"dataset": str(mnist_dir), "split": "test", "num_images": 1000}
    metrics = first["metrics"]
    for key in ("fid", "kid_mean", "kid_std", "is_mean", "precision", "recall", "class_coverage", "label_accuracy"):
        assert np.isfinite(metrics[key]), key
    assert metrics["class_coverage"] == 1.0 and metrics["label_accuracy"] > 0.5  # real digits, their labels


def test_evaluate_a_vae_checkpoint_reports_its_nll(classifier_ckpt, mnist_dir, tmp_path, capsys):
    overrides = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", "--model.init_args.iw_samples", "4"]
    run = fit("vae/vae_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *overrides)
    out = tmp_path / "vae.json"
    main(["evaluate", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", "200", "--data", str(mnist_dir),
          "--extractor", str(classifier_ckpt), "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
          "--kid-subset-size", "100"])  # fmt: skip
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["nll_bits_per_dim"] > 0 and np.isfinite(metrics["fid"])
    assert "nll_bits_per_dim" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--extractor", "nowhere.ckpt"], "--extractor nowhere.ckpt: no such checkpoint"),
        (["--extractor", "inception"], "Inception-v3 features are not available on this machine"),
        (["--extractor", "inception", "--kid-subset-size", "0"], "--num and --kid-subset-size must be >= 2"),
    ],
)
def test_unusable_extractors_are_clear_errors(mnist_dir, tmp_path, extra, message, capsys):
    np.savez(tmp_path / "s.npz", np.zeros((4, 28, 28, 1), np.uint8))
    with pytest.raises(SystemExit):
        main(["evaluate", "--samples", str(tmp_path / "s.npz"), "--data", str(mnist_dir), *extra])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error: ")]
    assert len(lines) == 1 and message in lines[0], lines


def test_sample_quality_monitor_logs_fid_during_training(classifier_ckpt, mnist_dir):
    from functools import partial

    import lightning as L

    from genlit.callbacks.sample_quality import SampleQualityMonitor
    from genlit.families.vae import VAE
    from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder

    data = ImageDataModule(str(mnist_dir), batch_size=64)
    model = VAE(partial(MLPEncoder, hidden=64), partial(MLPDecoder, hidden=64), (1, 28, 28), 10, latent_dim=4)
    monitor = SampleQualityMonitor("evaluator:mnist_classifier", num_samples=100, kid_subset_size=50)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=2, logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])  # fmt: skip
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    assert metrics["val/fid"] > 0 and 0 <= metrics["val/precision"] <= 1 and "val/kid" in metrics
    assert monitor.extractor.identity == f"genlit-classifier:{file_digest(classifier_ckpt)}"  # the session's


def test_a_run_root_without_a_checkpoint_names_the_fix(tmp_path):
    from genlit.metrics.extractors import resolve_extractor

    with pytest.raises(FileNotFoundError, match="pass evaluator:mnist_classifier instead"):
        resolve_extractor(str(tmp_path))


def test_a_training_that_fails_relays_the_childs_one_line(tmp_path):
    """The real child ``genlit fit`` (up to the data, which is missing): its error line, and nothing published."""
    entry = evaluator("evaluator:mnist_classifier", str(tmp_path / "gone"), tmp_path / "cache")
    with pytest.raises(ValueError) as failure:
        find_or_train(entry, train=train_in_child)
    message = str(failure.value)
    assert message.startswith(f"training the evaluator mnist_classifier on {tmp_path / 'gone'} with $GENLIT_EVALUATOR")
    assert " failed: dataset path " in message and "does not exist; point --data.dataset at an existing" in message
    assert "(log: " in message and "GENLIT_DEBUG" not in message
    assert "\n" not in message and not entry.checkpoint.exists()


@pytest.mark.parametrize("options", [{"every_n_epochs": 0}, {"num_samples": 1}, {"batch_size": 0}])
def test_sample_quality_monitor_rejects_bad_numbers(options):
    from genlit.callbacks.sample_quality import SampleQualityMonitor

    with pytest.raises(ValueError, match="SampleQualityMonitor needs every_n_epochs >= 1"):
        SampleQualityMonitor("evaluator:mnist_classifier", **options)
