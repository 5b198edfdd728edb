"""DPM-Solver++(2M): the multistep 2nd-order solver of the data-prediction ODE (Lu et al. 2022,
https://arxiv.org/abs/2211.01095, algorithm 2)."""

from __future__ import annotations

import math

from genlit.diffusion.samplers.sigma import SigmaSampler, report


class DPMSolverSampler(SigmaSampler):
    """DPM-Solver++(2M): one network evaluation per step, 2nd order from the second step on by reusing the
    previous step's x0 estimate.

    In the variance-exploding view the half-log-SNR is lambda = -ln(sigma), and a step from sigma to
    sigma' (h = lambda' - lambda) is x' = (sigma' / sigma) x - expm1(-h) D_hat, with D_hat the current x0
    estimate D_i (first step) or the extrapolation (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h_i. On a
    VP model this is the paper's update in x_t / alpha_t, since alpha and sigma_t enter only through their
    ratio. The last step (to sigma = 0) returns D_hat.

    Args: as :class:`~genlit.diffusion.samplers.SigmaSampler` (20 steps by default).
    """

    def __init__(self, num_steps: int = 20, rho: float | None = None, sigma_max: float | None = None) -> None:
        super().__init__(num_steps, rho, sigma_max)

    def solve(self, denoise, x, sigmas, rng=None, callback=None):
        """Algorithm 2 of Lu et al. through ``sigmas``."""
        previous, h_previous = None, None
        for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            denoised = denoise(x, sigma)
            estimate = denoised
            if sigma_next == 0:
                h = math.inf
            else:
                h = math.log(sigma) - math.log(sigma_next)
                if previous is not None:
                    r = h_previous / h
                    estimate = (1 + 1 / (2 * r)) * denoised - previous / (2 * r)
            x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
            previous, h_previous = denoised, h
            report(callback, i, sigma, x, denoised)
        return x
