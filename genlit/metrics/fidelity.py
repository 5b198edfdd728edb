"""Sample-quality metrics on extracted features: FID, KID and IS from torchmetrics, improved precision and
recall, class coverage and label accuracy.

Features are extracted once (:mod:`genlit.metrics.features`) and handed to torchmetrics' image metrics
through a pass-through "network", so one extraction serves every metric and the reference features can be
cached. All metrics are torchmetrics ``Metric``s: under DDP each rank updates with its share and
``compute`` gathers, so the result equals a single-process evaluation.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

COVERAGE_SHARE = 0.02  # a class is covered when at least 2% of the samples fall in it


class _Passthrough(nn.Module):
    """Stands in for Inception inside torchmetrics' metrics: the inputs already are features (or logits)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991).

    The real (sample) manifold is the union of balls around each real (sample) feature reaching its k-th
    nearest real (sample) neighbour. Precision: share of samples inside the real manifold; recall: share of
    real points inside the sample manifold. ``compute`` returns ``(precision, recall)``.
    """

    full_state_update = False

    def __init__(self, k: int = 3, chunk: int = 1024, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.chunk = k, chunk
        self.add_state("real", [], dist_reduce_fx="cat")
        self.add_state("fake", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        """Add features (N, D) of real data or of samples."""
        (self.real if real else self.fake).append(features.detach().double())

    def compute(self) -> tuple[Tensor, Tensor]:
        """(precision, recall), each a 0-dim tensor."""
        real, fake = dim_zero_cat(self.real), dim_zero_cat(self.fake)  # (N, D), (M, D)
        if min(len(real), len(fake)) <= self.k:
            raise ValueError(f"precision/recall with k={self.k} needs more than {self.k} real and sample features")
        precision = self._inside(fake, real, self._radii(real)).mean()
        recall = self._inside(real, fake, self._radii(fake)).mean()
        return precision, recall

    def _radii(self, points: Tensor) -> Tensor:
        """Distance of every point to its k-th nearest other point: (N,)."""
        radii = [
            torch.cdist(points[i : i + self.chunk], points).topk(self.k + 1, largest=False).values[:, -1]
            for i in range(0, len(points), self.chunk)
        ]  # the nearest is the point itself, at distance 0
        return torch.cat(radii)

    def _inside(self, queries: Tensor, points: Tensor, radii: Tensor) -> Tensor:
        """1.0 for each query within the ball of any point, else 0.0: (Q,)."""
        inside = [
            (torch.cdist(queries[i : i + self.chunk], points) <= radii[None]).any(1)
            for i in range(0, len(queries), self.chunk)
        ]
        return torch.cat(inside).double()


class SampleQuality(nn.Module):
    """FID, KID, IS, precision/recall and class statistics of samples against reference data, fed with
    extracted features (N, D) and logits (N, K).

    Args:
        num_features / num_classes: D and K of the extractor.
        kid_subset_size / kid_subsets: KID's polynomial-kernel MMD over random subsets (capped at the
            smaller of the two sample counts).
        is_splits: Inception Score splits.
        pr_k: neighbours of precision/recall.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        is_splits: int = 10,
        pr_k: int = 3,
    ) -> None:
        super().__init__()
        features = _Passthrough(num_features)
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        with warnings.catch_warnings():  # "will save all extracted features": they are features, not images
            warnings.filterwarnings("ignore", message="Metric .* will save all extracted features")
            self.kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=kid_subset_size)
            self.inception_score = InceptionScore(feature=_Passthrough(num_classes), splits=is_splits)
        self.precision_recall = PrecisionRecall(pr_k)
        self.num_classes = num_classes

    def update_real(self, features: Tensor) -> None:
        """Add reference features (N, D)."""
        for metric in (self.fid, self.kid):
            metric.update(features, real=True)
        self.precision_recall.update(features, real=True)

    def update_fake(self, features: Tensor, logits: Tensor) -> None:
        """Add sample features (N, D) and logits (N, K)."""
        for metric in (self.fid, self.kid):
            metric.update(features, real=False)
        self.precision_recall.update(features, real=False)
        self.inception_score.update(logits)

    @torch.no_grad()
    def compute(self, seed: int = 0) -> dict[str, float]:
        """Every figure; KID subsets and IS splits are drawn with ``seed``, so a re-run gives the same values."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            num_fake = int(self.fid.fake_features_num_samples)
            num_real = int(self.fid.real_features_num_samples)
            self.kid.subset_size = min(self.kid_subset_size, num_fake, num_real)
            kid_mean, kid_std = self.kid.compute()
            is_mean, is_std = self.inception_score.compute()
        precision, recall = self.precision_recall.compute()
        return {
            "fid": float(self.fid.compute()),
            "kid_mean": float(kid_mean),
            "kid_std": float(kid_std),
            "is_mean": float(is_mean),
            "is_std": float(is_std),
            "precision": float(precision),
            "recall": float(recall),
        }


def class_statistics(logits: Tensor, labels: Tensor | None = None) -> dict[str, float]:
    """``class_coverage``: share of the K classes that receive at least 2% of the samples (by the
    classifier's argmax); with requested ``labels`` (N,), ``label_accuracy``: share classified as requested."""
    predicted = logits.argmax(1)  # (N,)
    shares = torch.bincount(predicted, minlength=logits.shape[1]).double() / len(predicted)  # (K,)
    stats = {"class_coverage": float((shares >= COVERAGE_SHARE).double().mean())}
    if labels is not None:
        stats["label_accuracy"] = float((predicted == labels.to(predicted.device)).double().mean())
    return stats
