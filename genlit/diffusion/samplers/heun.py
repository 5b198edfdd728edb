"""EDM's stochastic sampler: Heun's 2nd-order method with optional churn (Karras et al. 2022,
https://arxiv.org/abs/2206.00364, algorithm 2; S_churn = 0 is algorithm 1, the deterministic sampler)."""

from __future__ import annotations

import math

from genlit.diffusion.samplers.base import noise_like
from genlit.diffusion.samplers.sigma import SigmaSampler, report


class HeunSampler(SigmaSampler):
    """Heun steps: an Euler step to sigma_{i+1}, then the trapezoidal correction with the slope there (2 network
    evaluations per step, 1 on the last step to sigma = 0: 2 num_steps - 1 in all; EDM's 18 steps give 35).

    With ``churn`` > 0, each step whose level lies in [s_tmin, s_tmax] first raises the noise level by
    gamma = min(churn / num_steps, sqrt(2) - 1), adding fresh noise of std s_noise sqrt(sigma_hat^2 - sigma^2)
    (drawn per sample by the ``rng``). On a discrete (VP) model the raised level is taken to its nearest timestep.

    Args:
        num_steps / rho / sigma_max: as :class:`~genlit.diffusion.samplers.SigmaSampler` (18 steps: EDM's).
        churn: S_churn (0: deterministic). s_tmin / s_tmax / s_noise: EDM's S_tmin, S_tmax, S_noise.
    """

    def __init__(
        self,
        num_steps: int = 18,
        rho: float | None = None,
        sigma_max: float | None = None,
        churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ) -> None:
        super().__init__(num_steps, rho, sigma_max)
        if churn < 0 or s_noise < 0 or s_tmin > s_tmax:
            raise ValueError(
                f"need churn >= 0, s_noise >= 0 and s_tmin <= s_tmax, got {churn}, {s_noise}, {s_tmin}, {s_tmax}"
            )
        self.churn, self.s_tmin, self.s_tmax, self.s_noise = churn, s_tmin, s_tmax, s_noise

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, churn={self.churn})"

    def solve(self, denoise, x, sigmas, rng=None, callback=None):
        """Algorithm 2 of Karras et al. through ``sigmas``."""
        steps = len(sigmas) - 1
        for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            gamma = min(self.churn / steps, math.sqrt(2) - 1) if self.s_tmin <= sigma <= self.s_tmax else 0.0
            sigma_hat = sigma * (1 + gamma)
            if gamma > 0:
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise * noise_like(x, rng)
            denoised = denoise(x, sigma_hat)
            slope = (x - denoised) / sigma_hat
            x_next = x + (sigma_next - sigma_hat) * slope
            if sigma_next > 0:
                slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
                x_next = x + (sigma_next - sigma_hat) * (slope + slope_next) / 2
            x = x_next
            report(callback, i, sigma, x, denoised)
        return x
