"""DDIM sampling (deterministic or with noise) and its inversion."""

from __future__ import annotations

import torch
from torch import Tensor

from genlit.diffusion.samplers.base import Denoiser, StepSampler, alpha_bars, noise_like
from genlit.diffusion.schedules import NoiseSchedule


class DDIMSampler(StepSampler):
    """DDIM (Song et al. 2021, https://arxiv.org/abs/2010.02502, eq. 12):
    x_{t_prev} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev).

    ``eta = 0`` is the deterministic sampler (an ODE discretisation, invertible with :meth:`invert`);
    ``eta = 1`` has DDPM's posterior variance.

    Args:
        num_steps: denoising steps (``None``: all T).
        eta: the share of DDPM's noise added at each step (>= 0).
    """

    def __init__(self, num_steps: int | None = 50, eta: float = 0.0) -> None:
        super().__init__(num_steps)
        if eta < 0:
            raise ValueError(f"DDIM eta must be >= 0, got {eta}")
        self.eta = eta

    def __repr__(self) -> str:
        return f"DDIMSampler(num_steps={self.num_steps}, eta={self.eta})"

    def step(self, x_t, t, t_prev, x0, eps, schedule, rng=None):
        """One DDIM step from t to t_prev."""
        ab_t, ab_prev = alpha_bars(schedule, t, t_prev, x_t.device)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * noise_like(x_t, rng)
        return x_prev

    @torch.no_grad()
    def invert(self, denoise: Denoiser, x0: Tensor, schedule: NoiseSchedule) -> Tensor:
        """Deterministic DDIM inversion: encode data x0 (B, ...) into the noise x_{T-1} that :meth:`sample`
        (with eta = 0 and the same steps) maps back to it, up to the discretisation error."""
        x, t_prev = x0, -1
        for t in reversed(self.timesteps(schedule)):  # ascending
            ab_prev, ab_t = alpha_bars(schedule, t_prev, t, x.device)
            # eps at the current point; from the clean data, the usual approximation eps(x, t)
            t_model = torch.full((len(x),), t if t_prev < 0 else t_prev, device=x.device, dtype=torch.long)
            eps = denoise(x, t_model)[1]
            x0_hat = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
            x = ab_t.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps
            t_prev = t
        return x
