"""EDM: the noise levels, preconditioning and loss weighting of Karras et al. 2022 ("Elucidating the Design
Space of Diffusion-Based Generative Models", https://arxiv.org/abs/2206.00364, table 1).

The process is variance-exploding in continuous noise levels: x = x0 + sigma n with n ~ N(0, I). The network
F is wrapped into the denoiser

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2)
and c_noise = ln(sigma) / 4 (sd: ``sigma_data``, the data's standard deviation; the scale of c_noise is an option),
so that F's input and its training target have unit variance at every noise level. Training draws ln(sigma) ~
N(P_mean, P_std^2) and weights the squared error of D by lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (unit
effective weight on F).

An :class:`EDMSchedule` is the EDM model's ``schedule``: a parameter-free object like the discrete
:class:`~genlit.diffusion.schedules.NoiseSchedule`, recorded by the YAML that built it. Both give the
continuous-sigma samplers (:class:`~genlit.diffusion.samplers.SigmaSampler`) what they need: the sampling
noise levels, the starting noise and a denoiser x0_hat = D(x, sigma) in the variance-exploding space.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

SigmaDenoiser = Callable[[Tensor, float], Tensor]
"""``D(x, sigma) -> x0_hat``: the denoiser in the variance-exploding space x = x0 + sigma n, for a batch x
(B, ...) at one noise level ``sigma`` (a float > 0)."""


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """The EDM sampling noise levels (Karras et al. 2022, eq. 5): ``num_steps`` levels from sigma_max down to
    sigma_min, evenly spaced in sigma^(1/rho), then 0: (num_steps + 1,) float64, descending."""
    if num_steps < 1:
        raise ValueError(f"the number of sampling steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    ramp = (
        torch.linspace(0, 1, num_steps, dtype=torch.float64) if num_steps > 1 else torch.zeros(1, dtype=torch.float64)
    )
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


class EDMSchedule:
    """The continuous noise levels of an EDM model (defaults: the paper's, for data in [-1, 1]).

    Args:
        sigma_min / sigma_max: the range of noise levels sampling runs through (0.002, 80).
        sigma_data: the standard deviation of the data (0.5); the preconditioning gives the network unit-variance
            inputs and targets under it.
        rho: the exponent of the sampling schedule :func:`karras_sigmas` (7).
        p_mean / p_std: training draws ln(sigma) ~ N(p_mean, p_std^2) (-1.2, 1.2).
        noise_label_scale: c_noise = noise_label_scale * ln(sigma), the noise level the net is told (the paper's
            1/4, for its nets' embeddings; EDM's own code picks it per network). genlit's U-Net and DiT embed it
            sinusoidally with frequencies made for timesteps on a [0, 1000] scale, where ln(sigma) / 4 spans
            under 3 radians of the fastest frequency; a scale near 100 spreads the levels like DDPM's timesteps.
    """

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        noise_label_scale: float = 0.25,
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        if sigma_data <= 0 or p_std <= 0 or rho <= 0:
            raise ValueError(f"sigma_data, p_std and rho must be > 0, got {sigma_data}, {p_std} and {rho}")
        self.sigma_min, self.sigma_max, self.sigma_data, self.rho = sigma_min, sigma_max, sigma_data, rho
        if noise_label_scale <= 0:
            raise ValueError(f"noise_label_scale must be > 0 (0 hides the noise level), got {noise_label_scale}")
        self.p_mean, self.p_std, self.noise_label_scale = p_mean, p_std, noise_label_scale

    def __repr__(self) -> str:
        return (
            f"EDMSchedule(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, sigma_data={self.sigma_data}, "
            f"rho={self.rho}, p_mean={self.p_mean}, p_std={self.p_std}, noise_label_scale={self.noise_label_scale})"
        )

    # ------------------------------------------------------------------------------------ training
    def sample_sigmas(self, batch: int, device, generator: torch.Generator | None = None) -> Tensor:
        """Training noise levels (batch,): ln(sigma) ~ N(p_mean, p_std^2)."""
        normal = torch.randn(batch, device=device, generator=generator)
        return (self.p_mean + self.p_std * normal).exp()

    def add_noise(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """x = x0 + sigma noise for x0 and noise (B, ...) and sigma (B,)."""
        return x0 + _per_example(sigma, x0.dim()) * noise

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, (B,) for sigma (B,)."""
        sd2 = self.sigma_data**2
        return (sigma.square() + sd2) / (sigma.square() * sd2)

    def preconditioning(self, sigma: Tensor, ndim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in), each (B, 1, ...) to broadcast over ``ndim`` dims, and c_noise (B,), for sigma (B,)."""
        sd = self.sigma_data
        sigma = sigma.float()
        norm = (sigma.square() + sd**2).sqrt()  # (B,)
        c_skip, c_out, c_in = sd**2 / norm.square(), sigma * sd / norm, 1 / norm
        c_noise = self.noise_label_scale * sigma.log()
        return _per_example(c_skip, ndim), _per_example(c_out, ndim), _per_example(c_in, ndim), c_noise

    def quartile(self, sigma: Tensor, bins: int) -> Tensor:
        """The bin (B,) int64 in [0, bins) of each noise level among ``bins`` equally likely ranges of the training
        distribution (bin 0: the least noise)."""
        z = (sigma.log() - self.p_mean) / self.p_std
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return (cdf * bins).long().clamp(0, bins - 1)

    # ------------------------------------------------------------------------------------ sampling
    def sampling_sigmas(self, num_steps: int, rho: float | None = None, sigma_max: float | None = None) -> Tensor:
        """The sampling noise levels (num_steps + 1,) from ``sigma_max`` (default: the schedule's) to sigma_min,
        then 0 (:func:`karras_sigmas`; ``rho`` default: the schedule's)."""
        top = self.sigma_max if sigma_max is None else sigma_max
        return karras_sigmas(num_steps, self.sigma_min, top, self.rho if rho is None else rho)

    def sigma_prior(self, noise: Tensor, sigma_max: float) -> Tensor:
        """The starting point of sampling at ``sigma_max`` from standard normal noise: noise * sigma_max."""
        return noise * sigma_max

    def sigma_denoiser(self, denoise: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> SigmaDenoiser:
        """D(x, sigma) from the family's ``denoise(x, sigma (B,)) -> (x0_hat, eps_hat)``."""

        def d(x: Tensor, sigma: float) -> Tensor:
            return denoise(x, torch.full((len(x),), float(sigma), device=x.device))[0]

        return d


def _per_example(values: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, ...) with ``ndim`` dims in all."""
    return values.view(-1, *[1] * (ndim - 1))
