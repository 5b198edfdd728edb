"""Terms of the variational bound on -log p(x_0) of a diffusion model (Ho et al. 2020, eq. 5), in nats.

-log p(x) <= L_prior + sum_{t=1}^{T-1} L_t + L_0 (0-based timesteps), where
L_prior = KL(q(x_{T-1} | x) || N(0, I)), L_t = KL(q(x_{t-1} | x_t, x) || p(x_{t-1} | x_t)) with the
reverse variance fixed to the posterior's, and L_0 = -log p(x | x_0) under a Gaussian discretized to
the 256 levels of 8-bit data (Ho et al. eq. 13). With data on that grid the bound is a proper discrete
NLL, so ``nats / (D ln 2)`` is the usual bits/dim. Every function returns one value per example (B,).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from genlit.diffusion.samplers import posterior
from genlit.diffusion.schedules import NoiseSchedule

BIN_HALF_WIDTH = 1 / 255  # half the spacing of 256 levels spread over [-1, 1]


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats (broadcasting)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2).square() * (-logvar2).exp())


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log P(x) per element for x on the 256-level grid of [-1, 1] under N(mean, exp(logvar)) integrated
    over each level's bin; the end bins extend to -inf and +inf."""
    inv_std = (-0.5 * logvar).exp()
    upper = inv_std * (x - mean + BIN_HALF_WIDTH)
    lower = inv_std * (x - mean - BIN_HALF_WIDTH)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X < upper edge)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X > lower edge)
    middle = _log_normal_mass(lower, upper)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, middle))


def _log_normal_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)), computed in whichever tail keeps precision."""
    flip = lower > 0  # both edges in the upper tail: use Phi(-lower) - Phi(-upper)
    hi = torch.where(flip, torch.special.log_ndtr(-lower), torch.special.log_ndtr(upper))
    lo = torch.where(flip, torch.special.log_ndtr(-upper), torch.special.log_ndtr(lower))
    return hi + torch.log1p(-(lo - hi).exp().clamp(max=1 - 1e-12))


def prior_term(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """L_prior = KL(q(x_{T-1} | x0) || N(0, I)) summed over dimensions: (B,)."""
    t = torch.full((len(x0),), schedule.num_steps - 1, device=x0.device, dtype=torch.long)
    signal, sigma = schedule.coefficients(t, x0.dim())  # (B, 1, ..)
    zero = torch.zeros((), device=x0.device)
    return normal_kl(signal * x0, 2 * sigma.log(), zero, zero).flatten(1).sum(1)


def denoising_term(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: int, x0_hat: Tensor) -> Tensor:
    """L_t for t >= 1, or L_0 for t = 0, given the model's estimate x0_hat of x0 from x_t: (B,) nats.

    The model's reverse step is q(x_{t-1} | x_t, x0_hat) with the posterior variance; at t = 0 its
    variance, zero in the posterior, is the one of t = 1 (as in Ho et al.'s released code).
    """
    model_mean = posterior(schedule, x_t, x0_hat, t, t - 1)[0]  # (B, ...)
    if t == 0:
        logvar = posterior(schedule, x_t, x0, 1, 0)[1].log()
        return -discretized_gaussian_log_likelihood(x0, model_mean, logvar).flatten(1).sum(1)
    true_mean, var, _ = posterior(schedule, x_t, x0, t, t - 1)
    logvar = var.log()
    return normal_kl(true_mean, logvar, model_mean, logvar).flatten(1).sum(1)


def stratified_timesteps(num_steps: int, k: int | None, generator: torch.Generator | None = None):
    """Timesteps 1..T-1 and their weights for estimating sum_{t>=1} L_t: every step (weight 1) when ``k`` is
    None or >= T-1, otherwise one uniform draw from each of ``k`` equal strata weighted by the stratum's
    size (an unbiased estimate of the sum). Returns (timesteps, weights) as Python lists."""
    if k is None or k >= num_steps - 1:
        return list(range(1, num_steps)), [1.0] * (num_steps - 1)
    edges = torch.linspace(1, num_steps, k + 1).round().long().tolist()
    timesteps, weights = [], []
    for lo, hi in itertools.pairwise(edges):
        timesteps.append(lo + int(torch.randint(hi - lo, (1,), generator=generator)))
        weights.append(float(hi - lo))
    return timesteps, weights
