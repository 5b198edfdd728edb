"""Toy 2-D mixtures: data module, mode statistics, the ModeCoverage metric and the ToyModeMetrics callback."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlit.callbacks.toy_metrics import ToyModeMetrics
from genlit.data.toy import ToyDataModule, sample_toy_mixture
from genlit.families.base import GenerativeFamily
from genlit.metrics.toy import ModeCoverage, mode_statistics
from genlit.seeding import SampleRNG, rank_range

# Fraction of a 2-D isotropic Gaussian within 3 std of its mean: P(chi2_2 < 9) = 1 - exp(-9/2).
TWO_D_WITHIN_3_STD = 1 - math.exp(-4.5)


def _setup(name="ring8", **kwargs):
    dm = ToyDataModule(name, **kwargs)
    dm.setup("fit")
    return dm


def test_layouts_before_setup():
    ring = ToyDataModule("ring8")
    assert ring.data_shape == (2,) and ring.num_classes == 8 and ring.std == 0.02
    assert ring.centers.shape == (8, 2) and ring.centers.dtype == torch.float32
    torch.testing.assert_close(ring.centers.norm(dim=1), torch.full((8,), 2.0))
    angles = torch.atan2(ring.centers[:, 1], ring.centers[:, 0]) % (2 * math.pi)  # (8,)
    torch.testing.assert_close(angles, torch.arange(8) * math.pi / 4, atol=1e-5, rtol=0)

    grid = ToyDataModule("grid25")
    assert grid.num_classes == 25 and grid.std == 0.05
    points = {tuple(p) for p in grid.centers.tolist()}
    assert points == {(x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)}
    assert grid.centers[5 * 1 + 3].tolist() == [-2.0, 2.0]  # index 5*i + j sits at (-4 + 2i, -4 + 2j)

    assert ToyDataModule("grid25", std=0.1).std == 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="'spiral'.*ring8, grid25"):
        ToyDataModule("spiral")
    with pytest.raises(ValueError, match="std must be positive"):
        ToyDataModule("ring8", std=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        ToyDataModule("ring8", batch_size=64, num_train=10)
    with pytest.raises(RuntimeError, match="setup"):
        ToyDataModule("ring8").train_dataloader()


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_per_mode_means_and_std(name):
    dm = _setup(name, num_train=50_000)
    x, y = dm.train_dataloader().dataset.tensors  # (N, 2), (N,)
    counts = torch.bincount(y, minlength=dm.num_classes)  # (K,)
    expected = len(y) / dm.num_classes
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()  # modes are equally likely
    for k in range(dm.num_classes):
        mean_k = x[y == k].mean(dim=0)  # (2,)
        # Standard error of the mean is std / sqrt(n_k); allow 5 of them.
        assert (mean_k - dm.centers[k]).abs().max() < 5 * dm.std / math.sqrt(counts[k])
    residual = x - dm.centers[y]  # (N, 2)
    torch.testing.assert_close(residual.std(dim=0), torch.full((2,), dm.std), rtol=0.02, atol=0)


def test_reproducible_and_shapes():
    a, b = _setup(seed=3, num_train=1000, num_val=300), _setup(seed=3, num_train=1000, num_val=300)
    c = _setup(seed=4, num_train=1000, num_val=300)
    for split in ("train", "val", "test"):
        xa, ya = getattr(a, f"{split}_dataloader")().dataset.tensors
        xb, yb = getattr(b, f"{split}_dataloader")().dataset.tensors
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.train_dataloader().dataset.tensors[0], c.train_dataloader().dataset.tensors[0])
    # Validation data does not depend on num_train; val and test differ.
    d = _setup(seed=3, num_train=2000, num_val=300)
    assert torch.equal(a.val_dataloader().dataset.tensors[0], d.val_dataloader().dataset.tensors[0])
    assert not torch.equal(a.val_dataloader().dataset.tensors[0], a.test_dataloader().dataset.tensors[0])

    loader = a.train_dataloader()
    assert len(loader) == 1000 // 256  # drop_last
    x, y = next(iter(loader))
    assert x.shape == (256, 2) and x.dtype == torch.float32 and y.shape == (256,) and y.dtype == torch.int64
    assert len(a.val_dataloader().dataset) == 300 and len(a.test_dataloader().dataset) == 300


def _hand_made_ring_samples(centers, std):
    return torch.stack(
        [
            centers[0],
            centers[2],
            centers[4],
            centers[6],
            centers[0] + torch.tensor([2.5 * std, 0.0]),  # high quality, mode 0 again
            centers[1] + torch.tensor([0.0, 3.5 * std]),  # beyond 3 std: low quality, mode 1 not covered
            torch.zeros(2),  # the middle of the ring, far from every mode
            torch.tensor([10.0, 10.0]),
        ]
    )  # (8, 2)


def test_mode_statistics_by_hand():
    dm = ToyDataModule("ring8")
    stats = mode_statistics(_hand_made_ring_samples(dm.centers, dm.std), dm.centers, dm.std)
    assert stats["modes_covered"] == 4
    assert stats["high_quality_fraction"] == pytest.approx(5 / 8)
    # Histogram of the 5 high-quality samples: mode 0 twice, modes 2, 4, 6 once; KL to uniform over 8.
    q = [2 / 5, 1 / 5, 1 / 5, 1 / 5]
    assert stats["kl_mode_histogram"] == pytest.approx(sum(p * math.log(8 * p) for p in q))


def test_mode_statistics_edge_cases():
    centers = ToyDataModule("ring8").centers
    collapsed = centers[3].repeat(10, 1)  # (10, 2): every sample on one mode
    stats = mode_statistics(collapsed, centers, 0.02)
    assert stats == {
        "modes_covered": 1,
        "high_quality_fraction": 1.0,
        "kl_mode_histogram": pytest.approx(math.log(8)),
    }
    far = torch.full((4, 2), 7.0)
    stats = mode_statistics(far, centers, 0.02)
    assert stats["modes_covered"] == 0 and stats["high_quality_fraction"] == 0.0
    assert math.isnan(stats["kl_mode_histogram"])
    # 2.9 std counts, 3.1 std does not.
    near = centers[:2] + torch.tensor([[0.0, 2.9 * 0.02], [3.1 * 0.02, 0.0]])
    assert mode_statistics(near, centers, 0.02)["modes_covered"] == 1
    with pytest.raises(ValueError, match="no samples"):
        mode_statistics(torch.empty(0, 2), centers, 0.02)
    with pytest.raises(ValueError, match="same D"):
        mode_statistics(torch.zeros(3, 3), centers, 0.02)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_true_distribution_matches_closed_form(name):
    dm = ToyDataModule(name)
    x, _ = sample_toy_mixture(20_000, dm.centers, dm.std, generator=torch.Generator().manual_seed(1))
    stats = mode_statistics(x, dm.centers, dm.std)
    assert stats["modes_covered"] == dm.num_classes
    # Binomial standard error is sqrt(0.011 * 0.989 / 20000) = 0.0007; allow about 7 of them.
    assert stats["high_quality_fraction"] == pytest.approx(TWO_D_WITHIN_3_STD, abs=0.005)
    assert stats["kl_mode_histogram"] < 0.01


def test_metric_accumulates_and_merges_like_the_function():
    dm = ToyDataModule("grid25")
    x, _ = sample_toy_mixture(3000, dm.centers, dm.std, generator=torch.Generator().manual_seed(2))
    x = torch.cat([x, torch.randn(500, 2) * 5])  # add low-quality points
    expected = mode_statistics(x, dm.centers, dm.std)

    metric = ModeCoverage(dm.centers, dm.std)
    metric.update(x[:1700])
    metric.update(x[1700:])
    assert metric.compute() == expected

    # merge_state applies the states' dist_reduce_fx, exactly as a DDP sync across two ranks would.
    rank0, rank1 = ModeCoverage(dm.centers, dm.std), ModeCoverage(dm.centers, dm.std)
    rank0.update(x[:1000])
    rank1.update(x[1000:])
    rank0.merge_state(rank1)
    assert rank0.compute() == expected
    assert rank0.total.item() == len(x)


def test_rank_ranges_split_the_indices_disjointly():
    for num, world in [(2500, 1), (2500, 3), (7, 4), (2, 5)]:
        ranges = [rank_range(num, r, world) for r in range(world)]
        assert [i for start, stop in ranges for i in range(start, stop)] == list(range(num))
        sizes = [stop - start for start, stop in ranges]
        assert max(sizes) - min(sizes) <= 1


def mixture_draw(centers, std, rng, labels=None):
    """Points of the true mixture, per sample from ``rng``: a uniform component unless labels are given."""
    if labels is None:
        labels = (rng.rand() * len(centers)).long().clamp(max=len(centers) - 1)  # (num,)
    return centers[labels] + std * rng.randn(2)  # (num, 2)


class _MixtureModel(GenerativeFamily):
    """A 'generator' that samples the true mixture; records its sample calls."""

    def __init__(self, centers, std, conditional=False):
        super().__init__(len(centers), conditional)
        self.layer = torch.nn.Linear(2, 1)
        self.centers, self.std = centers, std
        self.calls = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def draw(self, num, labels, rng):
        self.calls.append((num, labels))
        return mixture_draw(self.centers, self.std, rng, labels)


def _trainer(callback):
    return L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )


def test_callback_logs_with_a_real_trainer():
    dm = ToyDataModule("ring8", batch_size=64, num_train=128, num_val=64)
    model = _MixtureModel(dm.centers, dm.std)
    trainer = _trainer(ToyModeMetrics(num_samples=1000, seed=5))
    trainer.fit(model, datamodule=dm)
    assert [num for num, _ in model.calls] == [1000]  # once per validation epoch, not in the sanity check
    assert model.calls[0][1] is None  # unconditional model: no labels
    logged = trainer.callback_metrics
    assert logged["val/modes_covered"].item() == 8
    assert logged["val/high_quality_fraction"].item() == pytest.approx(TWO_D_WITHIN_3_STD, abs=0.03)
    # Same seed, same samples: the logged numbers equal the function on the seed's samples 0..999.
    x = mixture_draw(dm.centers, dm.std, SampleRNG(range(1000), 5))
    expected = mode_statistics(x, dm.centers, dm.std)
    assert logged["val/high_quality_fraction"].item() == pytest.approx(expected["high_quality_fraction"])
    assert logged["val/kl_mode_histogram"].item() == pytest.approx(expected["kl_mode_histogram"], rel=1e-5)


def test_callback_needs_toy_datamodule():
    dm = ToyDataModule("ring8")
    loader = DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = _trainer(ToyModeMetrics(num_samples=10))
    with pytest.raises(ValueError, match="needs a ToyDataModule"):
        trainer.fit(_MixtureModel(dm.centers, dm.std), train_dataloaders=loader, val_dataloaders=loader)


def test_callback_draws_balanced_labels_for_conditional_models():
    dm = ToyDataModule("grid25", batch_size=64, num_train=128, num_val=64)
    model = _MixtureModel(dm.centers, dm.std, conditional=True)
    trainer = _trainer(ToyModeMetrics(num_samples=2500))
    trainer.fit(model, datamodule=dm)
    ((num, labels),) = model.calls
    assert num == 2500 and labels.shape == (2500,) and labels.dtype == torch.int64
    assert labels.tolist() == [i % 25 for i in range(2500)]
    assert trainer.callback_metrics["val/modes_covered"].item() == 25
