"""Euler's method on the probability flow ODE (Karras et al. 2022, https://arxiv.org/abs/2206.00364)."""

from __future__ import annotations

from genlit.diffusion.samplers.sigma import SigmaSampler, report


class EulerSampler(SigmaSampler):
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i with d_i = (x_i - D(x_i, sigma_i)) / sigma_i: one network
    evaluation per step (on a VP model with eps prediction and the same levels, DDIM with eta = 0).

    Args: as :class:`~genlit.diffusion.samplers.SigmaSampler`.
    """

    def solve(self, denoise, x, sigmas, rng=None, callback=None):
        """Euler steps through ``sigmas``."""
        for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            denoised = denoise(x, sigma)
            x = x + (sigma_next - sigma) * (x - denoised) / sigma
            report(callback, i, sigma, x, denoised)
        return x
