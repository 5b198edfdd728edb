"""Ancestral (DDPM) sampling."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from genlit.diffusion.samplers.base import StepSampler, alpha_bars, noise_like
from genlit.diffusion.schedules import NoiseSchedule


class DDPMSampler(StepSampler):
    """Ancestral sampling from p(x_{t_prev} | x_t) = q(x_{t_prev} | x_t, x0_hat) (Ho et al. 2020,
    https://arxiv.org/abs/2006.11239), on all T steps or a respaced subset (Nichol & Dhariwal 2021).

    Args:
        num_steps: denoising steps (``None``: all T).
        variance: ``posterior`` (beta-tilde, "fixed small") or ``beta`` ("fixed large"); Ho et al.
            report similar samples for both. No noise is added on the last step.
    """

    def __init__(self, num_steps: int | None = None, variance: Literal["posterior", "beta"] = "posterior") -> None:
        super().__init__(num_steps)
        if variance not in ("posterior", "beta"):
            raise ValueError(f"unknown DDPM variance {variance!r}; use posterior or beta")
        self.variance = variance

    def step(self, x_t, t, t_prev, x0, eps, schedule, rng=None):
        """One ancestral step: the Gaussian posterior mean plus noise of the chosen variance."""
        mean, var, beta = posterior(schedule, x_t, x0, t, t_prev)
        if t_prev < 0:
            return mean
        var = var if self.variance == "posterior" else beta
        return mean + var**0.5 * noise_like(x_t, rng)


def posterior(schedule: NoiseSchedule, x_t: Tensor, x0: Tensor, t: int, t_prev: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (B, ...), variance and beta (0-dim) of q(x_{t_prev} | x_t, x_0) between any two timesteps.

    With beta' = 1 - ab_t / ab_prev (the beta of the respaced chain): mean = sqrt(ab_prev) beta' / (1 - ab_t)
    x_0 + sqrt(1 - beta') (1 - ab_prev) / (1 - ab_t) x_t, variance = (1 - ab_prev) / (1 - ab_t) beta'.
    """
    ab_t, ab_prev = alpha_bars(schedule, t, t_prev, x_t.device)
    beta = 1 - ab_t / ab_prev
    mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t
    return mean, (1 - ab_prev) / (1 - ab_t) * beta, beta
