"""How a discrete bottleneck uses its codebook: the perplexity of the code assignments and the codes in use.

The perplexity ``exp(H(p))`` of the empirical distribution p of the codes chosen (H in nats, 0 log 0 = 0) is the
number of equally used codes that would have the same entropy: K when all K codes are chosen equally often, 1 when
one code takes everything. A VQ-VAE whose perplexity stays far below its codebook size wastes codes (codebook
collapse); the dead-code restarts of :class:`genlit.nets.vqvae.VectorQuantizer` are the remedy.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def perplexity(counts: Tensor) -> Tensor:
    """``exp(-sum_i p_i log p_i)`` of the assignment counts (K,) (p = counts / their sum), a float32 scalar; 0 for
    no assignments at all."""
    counts = counts.detach().double()
    total = counts.sum()
    if total <= 0:
        return torch.zeros((), device=counts.device)
    p = counts / total  # (K,)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum()
    return entropy.exp().float()


def codes_in_use(counts: Tensor) -> Tensor:
    """The number of codes chosen at least once (a float32 scalar) of assignment counts (K,)."""
    return (counts > 0).sum().float()


class CodeUsage(Metric):
    """Counts of code assignments over an epoch (summed across DDP ranks); ``compute`` gives the ``perplexity``
    (:func:`perplexity`) and ``codes_used`` (:func:`codes_in_use`) of the whole epoch's assignments, not means of
    per-batch figures."""

    full_state_update = False

    def __init__(self, num_codes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        self.num_codes = num_codes
        self.add_state("counts", torch.zeros(num_codes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        """Add code indices of any shape (int64, each in [0, num_codes))."""
        self.counts += torch.bincount(indices.detach().reshape(-1), minlength=self.num_codes).to(self.counts.dtype)

    def compute(self) -> dict[str, Tensor]:
        """``{"perplexity", "codes_used"}`` of the assignments so far."""
        return {"perplexity": perplexity(self.counts), "codes_used": codes_in_use(self.counts)}
