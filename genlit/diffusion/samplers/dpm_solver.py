"""DPM-Solver++(2M): the multistep 2nd-order solver of the data-prediction ODE (Lu et al. 2022,
https://arxiv.org/abs/2211.01095, algorithm 2), and with ``eta`` > 0 its SDE form (SDE-DPM-Solver++(2M), the
same paper's appendix), which adds fresh noise at each step."""

from __future__ import annotations

import math

from genlit.diffusion.samplers.base import noise_like
from genlit.diffusion.samplers.sigma import SigmaSampler, report


class DPMSolverSampler(SigmaSampler):
    """DPM-Solver++(2M): one network evaluation per step, 2nd order from the second step on by reusing the
    previous step's x0 estimate.

    In the variance-exploding view the half-log-SNR is lambda = -ln(sigma), and a step from sigma to
    sigma' (h = lambda' - lambda) is x' = (sigma' / sigma) x - expm1(-h) D_hat, with D_hat the current x0
    estimate D_i (first step) or the extrapolation (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h_i. On a
    VP model this is the paper's update in x_t / alpha_t, since alpha and sigma_t enter only through their
    ratio. The last step (to sigma = 0) returns D_hat.

    With ``eta`` > 0 the step solves the reverse SDE instead: x' = (sigma' / sigma) e^(-eta h) x
    - expm1(-(1 + eta) h) D_hat + sigma' sqrt(-expm1(-2 eta h)) z, z fresh standard noise drawn per sample
    (eta = 1: the paper's SDE-DPM-Solver++(2M); eta = 0: the ODE solver above). The noise forgets part of
    the error of earlier steps, as EDM's churn does for Heun.

    Args:
        num_steps / rho / sigma_max: as :class:`~genlit.diffusion.samplers.SigmaSampler` (20 steps by default).
        eta: share of the SDE's noise (0: the probability-flow ODE, deterministic; 1: the reverse SDE).
    """

    def __init__(
        self, num_steps: int = 20, rho: float | None = None, sigma_max: float | None = None, eta: float = 0.0
    ) -> None:
        super().__init__(num_steps, rho, sigma_max)
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0: the ODE solver, 1: the SDE one), got {eta}")
        self.eta = eta

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, eta={self.eta})"

    def solve(self, denoise, x, sigmas, rng=None, callback=None):
        """Algorithm 2 of Lu et al. (or its SDE form) through ``sigmas``."""
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
            kept = math.exp(-self.eta * h) if sigma_next > 0 else 0.0
            x = (sigma_next / sigma) * kept * x - math.expm1(-(1 + self.eta) * h) * estimate
            if self.eta > 0 and sigma_next > 0:
                x = x + sigma_next * math.sqrt(-math.expm1(-2 * self.eta * h)) * noise_like(x, rng)
            previous, h_previous = denoised, h
            report(callback, i, sigma, x, denoised)
        return x
