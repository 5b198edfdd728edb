"""Mode-collapse statistics for 2-D Gaussian mixtures (ring of 8, grid of 25).

Definitions (VEEGAN, Srivastava et al. 2017, https://arxiv.org/abs/1705.07761, section 5.1; PacGAN,
Lin et al. 2018, https://arxiv.org/abs/1712.04086, section 3.1 and ``MetricLogger`` in
https://github.com/fjxmlzn/PacGAN ``synthetic_data_experiments/PacGAN/pacgan/extensions.py``):

* each sample is assigned to its nearest mode centre; it is **high quality** when that distance is
  below three standard deviations of the mode (``< 3 * std``, as in PacGAN's code);
* a mode is **covered** ("captured") when it is the nearest mode of at least one high-quality sample;
* ``high_quality_fraction`` is the share of all samples that are high quality (the papers evaluate
  2,500 samples);
* ``kl_mode_histogram`` is ``KL(q || uniform) = sum_k q_k log(K q_k)`` in nats, where ``q`` is the
  histogram of the high-quality samples over modes (PacGAN's "reverse KL" column): 0 for a perfectly
  balanced generator, ``log K`` when all high-quality samples sit in one mode, NaN when there are none.

For samples of the true mixture the expected high-quality fraction is ``1 - exp(-4.5) = 0.9889``
(the squared distance over ``std**2`` of a 2-D isotropic Gaussian is chi-squared with 2 degrees of
freedom), not the 1-D figure of 99.7 %.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

HIGH_QUALITY_STDS = 3.0


def high_quality_counts(samples: Tensor, centers: Tensor, std: float) -> Tensor:
    """Count, per mode, the samples whose nearest centre is that mode and lies within 3 std.

    Args:
        samples: generated points, (N, D).
        centers: mode centres, (K, D).
        std: per-axis standard deviation of every mode.

    Returns:
        int64 tensor (K,) on ``samples.device``; its sum is the number of high-quality samples.
    """
    if samples.ndim != 2 or centers.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples must be (N, D) and centers (K, D) with the same D; got {tuple(samples.shape)} "
            f"and {tuple(centers.shape)}"
        )
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    centers = centers.to(device=samples.device, dtype=torch.float32)
    diff = samples.float()[:, None, :] - centers[None, :, :]  # (N, K, D)
    dist = diff.norm(dim=-1)  # (N, K)
    min_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    good = min_dist < HIGH_QUALITY_STDS * std  # (N,)
    return torch.bincount(nearest[good], minlength=len(centers))  # (K,)


def statistics_from_counts(counts: Tensor, total: int | Tensor) -> dict[str, float | int]:
    """Turn per-mode high-quality counts (K,) and the total number of samples into the statistics.

    Returns ``{"modes_covered": int, "high_quality_fraction": float, "kl_mode_histogram": float}``.
    """
    total = int(total)
    if total < 1:
        raise ValueError("no samples were given; mode statistics need at least one sample")
    counts = counts.detach().double().cpu()  # (K,)
    num_good = float(counts.sum())
    if num_good > 0:
        q = counts[counts > 0] / num_good  # (K',)
        kl = float((q * (q * len(counts)).log()).sum())
    else:
        kl = math.nan
    return {
        "modes_covered": int((counts > 0).sum()),
        "high_quality_fraction": num_good / total,
        "kl_mode_histogram": kl,
    }


def mode_statistics(samples: Tensor, centers: Tensor, std: float) -> dict[str, float | int]:
    """Modes covered, high-quality fraction and KL of the mode histogram for samples (N, D).

    See the module docstring for the definitions; ``centers`` is (K, D), ``std`` the per-axis
    standard deviation of every mode.
    """
    return statistics_from_counts(high_quality_counts(samples, centers, std), len(samples))


class ModeCoverage(Metric):
    """torchmetrics version of :func:`mode_statistics` that accumulates over batches and DDP ranks.

    The states are the per-mode high-quality counts (K,) and the number of samples, both summed
    across processes, so ``compute()`` on every rank equals :func:`mode_statistics` on all samples
    of all ranks together.

    Args:
        centers: mode centres, (K, D).
        std: per-axis standard deviation of every mode.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, centers: Tensor, std: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if centers.ndim != 2:
            raise ValueError(f"centers must be (K, D), got shape {tuple(centers.shape)}")
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.std = float(std)
        self.register_buffer("centers", centers.detach().float().clone(), persistent=False)  # (K, D)
        self.add_state("counts", default=torch.zeros(len(centers), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        """Add a batch of generated points (N, D)."""
        self.counts += high_quality_counts(samples, self.centers, self.std).to(self.counts.device)
        self.total += len(samples)

    def compute(self) -> dict[str, float | int]:
        """The statistics of everything seen since the last reset (see :func:`mode_statistics`)."""
        return statistics_from_counts(self.counts, self.total)
