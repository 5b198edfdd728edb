"""Exact likelihoods of discrete pixels under an autoregressive image model, as plain functions on tensors.

An autoregressive model (PixelCNN, van den Oord et al. 2016, https://arxiv.org/abs/1606.05328) gives, for every
sub-pixel, the logits of its value given the values before it in raster order (colours R, G, B in order within a
pixel), so ``-log p(x)`` is the sum over sub-pixels of the cross-entropies, in nats per example: no bound. Pixels are

* ``bernoulli``: binary, {0, 1} (binarized MNIST); one logit per sub-pixel.
* ``categorical``: 8-bit levels 0..255 (:func:`genlit.objectives.dequantization.to_levels` of model-space data);
  256 logits per sub-pixel.

The data are discrete, so bits/dim need no discretisation offset: ``nats / (D ln 2)``
(:func:`genlit.objectives.elbo.bits_per_dim`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor

from genlit.objectives.elbo import log_likelihood

PixelLikelihood = Literal["bernoulli", "categorical"]
PIXEL_LIKELIHOODS: tuple[str, ...] = get_args(PixelLikelihood)


def check_pixel_likelihood(name: str) -> None:
    """Raise a ValueError naming the allowed pixel likelihoods when ``name`` is not one of them."""
    if name not in PIXEL_LIKELIHOODS:
        raise ValueError(f"unknown pixel likelihood {name!r}; use one of {', '.join(PIXEL_LIKELIHOODS)}")


def pixel_nll(likelihood: PixelLikelihood, logits: Tensor, target: Tensor) -> Tensor:
    """``-log p(target)`` in nats per example (B,), summed over every sub-pixel; computed in float32.

    ``bernoulli``: ``logits`` (B, C, H, W), ``target`` in {0, 1} of the same shape (the binary cross-entropy of
    :func:`~genlit.objectives.elbo.log_likelihood`). ``categorical``: ``logits`` (B, C, K, H, W) over K levels,
    ``target`` the integer levels (B, C, H, W) in 0..K-1 (any dtype holding integers).
    """
    check_pixel_likelihood(likelihood)
    if likelihood == "bernoulli":
        return -log_likelihood("bernoulli", logits, target)  # (B,)
    per_pixel = F.cross_entropy(logits.float().transpose(1, 2), target.long(), reduction="none")  # (B, C, H, W)
    return per_pixel.flatten(1).sum(1)  # (B,)
