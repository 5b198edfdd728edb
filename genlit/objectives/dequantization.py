"""8-bit pixels as a density model sees them: integer levels, uniform dequantization, the logit transform.

A density p on continuous data gives a bound on the probability of discrete 8-bit data when the data are
dequantized uniformly (Theis et al. 2016, https://arxiv.org/abs/1511.01844, section 3.1): with levels
k in {0..255}^D and y = (k + u) / 256, u ~ U[0, 1)^D,

    log P(k) >= E_u[log p_y(y)] - D log 256,

so ``-log p_y(y) + D log 256`` nats (one u per example, :func:`dequantized_nll`) is an unbiased estimate of an
upper bound on the code length of k, and divided by ``D ln 2``
(:func:`~genlit.objectives.elbo.bits_per_dim`) it is the bits/dim that flow papers report (RealNVP, Glow): a
model uniform on [0, 1)^D scores exactly 8. With k draws of u per example, :func:`dequantized_nll` gives the
tighter importance-weighted bound (a uniform proposal; Ho et al. 2019, Flow++,
https://arxiv.org/abs/1902.00275, section 3.1).

genlit's model space maps level k to ``k / 127.5 - 1`` (:func:`genlit.data.images.to_model_space`);
:func:`to_levels` inverts it. The logit transform of RealNVP (Dinh et al. 2017,
https://arxiv.org/abs/1605.08803, section 4.1) maps y in [0, 1) to the real line, with its log-determinant,
so that a flow on the logits still gives the exact density of y.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlit.objectives.elbo import uniform_dequantization_offset

NUM_LEVELS = 256  # 8-bit data
DISCRETIZATION_NATS_PER_DIM = uniform_dequantization_offset(1, 1.0 / NUM_LEVELS)  # log 256 = 5.545 nats
"""Nats per dimension to add to ``-log p_y`` of a density on [0, 1)^D for the discrete 8-bit bound."""


def to_levels(x: Tensor) -> Tensor:
    """The integer levels k in {0..255} (as float32, same shape) of model-space 8-bit data x = k / 127.5 - 1."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, NUM_LEVELS - 1)  # (B, ...)


def uniform_dequantize(levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """y = (k + u) / 256 with u ~ U[0, 1) drawn per element (``generator`` on ``levels``' device): (B, ...) in
    [0, 1)."""
    u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=levels.dtype)  # (B, ...)
    return (levels + u) / NUM_LEVELS


def from_dequantized(y: Tensor) -> Tensor:
    """Model-space data of dequantized values y in [0, 1) (B, ...): the centre of level floor(256 y) lands on
    ``k / 127.5 - 1``, so rounding (``genlit.imaging.to_uint8``) gives back the level whose bin holds y."""
    return ((NUM_LEVELS * y - 0.5) / 127.5 - 1.0).clamp(-1.0, 1.0)  # (B, ...)


def logit_transform(y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """RealNVP's ``z = logit(alpha + (1 - 2 alpha) y)`` of y in [0, 1] (B, ...), and log|dz/dy| summed per
    example (B,): ``sum log(1 - 2 alpha) - log p - log(1 - p)`` with p = alpha + (1 - 2 alpha) y. ``alpha`` in
    (0, 0.5) keeps p away from 0 and 1 (RealNVP: 0.05)."""
    p = alpha + (1.0 - 2.0 * alpha) * y  # (B, ...)
    z = torch.log(p) - torch.log1p(-p)  # (B, ...)
    logdet = (math.log(1.0 - 2.0 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)  # (B,)
    return z, logdet


def inverse_logit_transform(z: Tensor, alpha: float) -> Tensor:
    """y = (sigmoid(z) - alpha) / (1 - 2 alpha): the inverse of :func:`logit_transform`, (B, ...)."""
    return (torch.sigmoid(z) - alpha) / (1.0 - 2.0 * alpha)


def dequantized_nll(log_density: Tensor, num_dims: int) -> Tensor:
    """The discrete 8-bit NLL bound in nats per example (B,) from ``log_density`` (k, B), log p_y of k uniform
    dequantizations of each example's ``num_dims`` values: ``-(logsumexp_i log p_y(y_i) - log k) + D log 256``.
    With k = 1 it is ``-log p_y(y) + D log 256``; a larger k tightens the bound in expectation (Jensen)."""
    k = log_density.shape[0]
    return -(torch.logsumexp(log_density.float(), dim=0) - math.log(k)) + num_dims * DISCRETIZATION_NATS_PER_DIM
