"""Reverse-process samplers: parameter-free objects that take the denoiser as an argument.

A denoiser is any callable ``denoise(x_t, t) -> (x0_hat, eps_hat)`` on a batch x_t (B, ...) at integer
timesteps t (B,); the diffusion family builds one from its network, prediction target and guidance.
A sampler walks ``num_steps`` timesteps of the schedule (all T, or fewer evenly spaced ones:
:meth:`~genlit.diffusion.schedules.NoiseSchedule.respaced`) from pure noise down to the data, calling
``step`` for each pair (t, t_prev); t_prev = -1 stands for the clean data (alpha_bar = 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genlit.diffusion.schedules import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``denoise(x_t, t) -> (x0_hat, eps_hat)``, each shaped like x_t."""


class Sampler:
    """Base class: the loop over timesteps. Subclasses define :meth:`step`.

    Args:
        num_steps: number of denoising steps; ``None`` uses every step of the schedule.
    """

    def __init__(self, num_steps: int | None = None) -> None:
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 (or null for every step), got {num_steps}")
        self.num_steps = num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps})"

    def step(
        self, x_t: Tensor, t: int, t_prev: int, x0: Tensor, eps: Tensor, schedule: NoiseSchedule, generator=None
    ) -> Tensor:
        """x_{t_prev} from x_t and the denoiser's (x0_hat, eps_hat) at t."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        denoise: Denoiser,
        noise: Tensor,
        schedule: NoiseSchedule,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Run the reverse process from ``noise`` (B, ...) (x at t = T-1) to data; returns x_0 estimates (B, ...)."""
        timesteps = schedule.respaced(self.num_steps).tolist()  # descending
        x = noise
        for i, t in enumerate(tqdm(timesteps, desc="denoising", unit="step", leave=False, disable=not progress)):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            x0, eps = denoise(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
            x = self.step(x, t, t_prev, x0, eps, schedule, generator)
        return x


class DDPMSampler(Sampler):
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

    def step(self, x_t, t, t_prev, x0, eps, schedule, generator=None):
        """One ancestral step: the Gaussian posterior mean plus noise of the chosen variance."""
        mean, var, beta = posterior(schedule, x_t, x0, t, t_prev)
        if t_prev < 0:
            return mean
        var = var if self.variance == "posterior" else beta
        return mean + var**0.5 * _noise_like(x_t, generator)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, https://arxiv.org/abs/2010.02502, eq. 12):
    x_{t_prev} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev).

    ``eta = 0`` is the deterministic sampler (an ODE discretisation, invertible with :meth:`invert`);
    ``eta = 1`` has DDPM's posterior variance.
    """

    def __init__(self, num_steps: int | None = 50, eta: float = 0.0) -> None:
        super().__init__(num_steps)
        if eta < 0:
            raise ValueError(f"DDIM eta must be >= 0, got {eta}")
        self.eta = eta

    def __repr__(self) -> str:
        return f"DDIMSampler(num_steps={self.num_steps}, eta={self.eta})"

    def step(self, x_t, t, t_prev, x0, eps, schedule, generator=None):
        """One DDIM step from t to t_prev."""
        ab_t, ab_prev = _alpha_bars(schedule, t, t_prev, x_t.device)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if self.eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * _noise_like(x_t, generator)
        return x_prev

    @torch.no_grad()
    def invert(self, denoise: Denoiser, x0: Tensor, schedule: NoiseSchedule, progress: bool = False) -> Tensor:
        """Deterministic DDIM inversion: encode data x0 (B, ...) into the noise x_{T-1} that :meth:`sample`
        (with eta = 0 and the same steps) maps back to it, up to the discretisation error."""
        timesteps = schedule.respaced(self.num_steps).flip(0).tolist()  # ascending
        x, t_prev = x0, -1
        for t in tqdm(timesteps, desc="inverting", unit="step", leave=False, disable=not progress):
            ab_prev, ab_t = _alpha_bars(schedule, t_prev, t, x.device)
            # eps at the current point; from the clean data, the usual approximation eps(x, t)
            t_model = torch.full((len(x),), t if t_prev < 0 else t_prev, device=x.device, dtype=torch.long)
            eps = denoise(x, t_model)[1]
            x0_hat = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
            x = ab_t.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps
            t_prev = t
        return x


def posterior(schedule: NoiseSchedule, x_t: Tensor, x0: Tensor, t: int, t_prev: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (B, ...), variance and beta (0-dim) of q(x_{t_prev} | x_t, x_0) between any two timesteps.

    With beta' = 1 - ab_t / ab_prev (the beta of the respaced chain): mean = sqrt(ab_prev) beta' / (1 - ab_t)
    x_0 + sqrt(1 - beta') (1 - ab_prev) / (1 - ab_t) x_t, variance = (1 - ab_prev) / (1 - ab_t) beta'.
    """
    ab_t, ab_prev = _alpha_bars(schedule, t, t_prev, x_t.device)
    beta = 1 - ab_t / ab_prev
    mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t
    return mean, (1 - ab_prev) / (1 - ab_t) * beta, beta


def _alpha_bars(schedule: NoiseSchedule, t: int, t_prev: int, device) -> tuple[Tensor, Tensor]:
    pair = schedule.alpha_bar_at(torch.tensor([t, t_prev], device=device))  # (2,)
    return pair[0], pair[1]


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
