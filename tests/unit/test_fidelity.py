"""Sample-quality metrics on features: FID against an independent computation, precision/recall, class
statistics, and the .npz checks of genlit evaluate."""

import numpy as np
import pytest
import scipy.linalg
import torch

from genlit.commands.evaluate import load_samples
from genlit.metrics.fidelity import PrecisionRecall, SampleQuality, class_statistics


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of two feature sets, with scipy's matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def quality(real, fake, logits=None):
    metric = SampleQuality(real.shape[1], 4, kid_subset_size=100, kid_subsets=20, is_splits=2)
    metric.update_real(real)
    if logits is None:
        logits = torch.randn(len(fake), 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    metric.update_fake(fake, logits)
    return metric.compute()


def test_fid_matches_scipy_and_is_zero_against_itself():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(600, 16, generator=generator, dtype=torch.float64)
    fake = 0.8 * torch.randn(500, 16, generator=generator, dtype=torch.float64) + 0.3
    got = quality(real, fake)["fid"]
    assert got == pytest.approx(scipy_fid(real.numpy(), fake.numpy()), rel=1e-3)
    assert abs(quality(real, real.clone())["fid"]) < 1e-6


def test_kid_and_is_are_reproducible_and_sensible():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    far = torch.randn(300, 8, generator=generator, dtype=torch.float64) + 2
    first, again = quality(real, far), quality(real, far)
    assert first == again  # seeded subsets and splits
    assert quality(real, real.clone())["kid_mean"] < 0.01 < first["kid_mean"]
    confident = torch.nn.functional.one_hot(torch.arange(300) % 4, 4).double() * 50  # every class, sure of each
    # exp(mutual information) = 4 classes; the random splits are not exactly balanced, hence 2%
    assert quality(real, real, confident)["is_mean"] == pytest.approx(4.0, rel=0.02)


def test_precision_recall_of_identical_disjoint_and_collapsed_sets():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(400, 2, generator=generator)

    def pr(fake):
        metric = PrecisionRecall(k=3)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return [round(float(v), 4) for v in metric.compute()]

    assert pr(real.clone()) == [1.0, 1.0]
    assert pr(real + 100) == [0.0, 0.0]
    collapsed = real[real[:, 0] > 1.0]  # samples from one corner of the data only
    precision, recall = pr(collapsed)
    assert precision == 1.0 and recall < 0.3


def test_class_statistics_by_hand():
    logits = torch.zeros(100, 5)
    logits[:60, 0] = 1  # 60% class 0
    logits[60:99, 1] = 1  # 39% class 1
    logits[99, 2] = 1  # 1% class 2: under the 2% bar
    labels = torch.zeros(100, dtype=torch.long)
    stats = class_statistics(logits, labels)
    assert stats == {"class_coverage": pytest.approx(2 / 5), "label_accuracy": pytest.approx(0.6)}
    assert "label_accuracy" not in class_statistics(logits)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"arr_0": np.zeros((4, 28, 28, 1), np.float32)}, r"arr_0 must be uint8 of shape \(N, H, W, C\)"),
        ({"arr_0": np.zeros((4, 28, 28), np.uint8)}, r"arr_0 must be uint8 of shape \(N, H, W, C\)"),
        ({"arr_0": np.zeros((0, 28, 28, 1), np.uint8)}, "holds 0 images; the metrics need at least 2"),
        ({"images": np.zeros((4, 28, 28, 1), np.uint8)}, "has no arr_0"),
    ],
    ids=["float", "3-d", "empty", "no-arr_0"],
)
def test_bad_sample_files_are_clear_errors(tmp_path, arrays, message):
    path = tmp_path / "s.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_samples(path)


def test_samples_load_as_nchw_with_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images, np.array([1, 2, 3]))
    loaded, labels = load_samples(tmp_path / "s.npz")
    assert loaded.shape == (3, 1, 28, 28) and torch.equal(loaded[:, 0], torch.from_numpy(images[..., 0]))
    assert labels.tolist() == [1, 2, 3]
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="is not a readable .npz"):
        load_samples(tmp_path / "junk.npz")


def test_bad_metric_arguments_are_clear_errors():
    from genlit.metrics.binned import BinnedMean

    with pytest.raises(ValueError, match="k must be >= 1"):
        PrecisionRecall(k=0)
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        BinnedMean(0)
    metric = PrecisionRecall(k=3)
    metric.update(torch.randn(3, 2), real=True)
    metric.update(torch.randn(10, 2), real=False)
    with pytest.raises(ValueError, match="needs more than 3 real and sample features"):
        metric.compute()
