"""Means of per-example values grouped into bins (e.g. a diffusion loss by timestep quartile)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class BinnedMean(Metric):
    """Mean of values (B,) per bin index (B,) in [0, num_bins), summed across DDP ranks; ``compute``
    returns (num_bins,), NaN for a bin that got no value.

    Written here because torchmetrics' ``MeanMetric`` either checks for NaNs (a device sync on every
    update) or, with ``nan_strategy="disable"``, drops the weights that would select a bin (torchmetrics
    1.9 replaces them by ones). Updates use ``index_add_``: no host synchronisation.
    """

    full_state_update = False

    def __init__(self, num_bins: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.add_state("sums", torch.zeros(num_bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor, bins: Tensor) -> None:
        """Add values (B,) to their bins (B,) (int64)."""
        values = values.detach().reshape(-1).to(self.sums.dtype)  # (B,)
        bins = bins.reshape(-1)  # (B,)
        self.sums.index_add_(0, bins, values)
        self.counts.index_add_(0, bins, torch.ones_like(values))

    def compute(self) -> Tensor:
        """Per-bin means (num_bins,) in float32."""
        return (self.sums / self.counts).float()
