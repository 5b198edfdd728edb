"""The base of the continuous-noise-level samplers (Euler, Heun, DPM-Solver++): they integrate the probability
flow ODE dx/dsigma = (x - D(x, sigma)) / sigma of the variance-exploding view x = x0 + sigma n (Karras et al.
2022, https://arxiv.org/abs/2206.00364, eq. 1 and section 2), on EDM models and on the discrete-time
(VP, DDPM-trained) ones alike: the model's schedule gives the noise levels, the starting point and the denoiser
D(x, sigma) (:class:`~genlit.diffusion.edm.EDMSchedule`, or a discrete
:class:`~genlit.diffusion.schedules.NoiseSchedule` whose levels are its timesteps' sigma_t = s_t / a_t).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from genlit.diffusion.edm import SigmaDenoiser
from genlit.diffusion.samplers.base import Sampler, StepCallback
from genlit.seeding import SampleRNG


class SigmaSampler(Sampler):
    """A sampler over EDM's noise levels :func:`~genlit.diffusion.edm.karras_sigmas`; subclasses define
    :meth:`solve`.

    Args:
        num_steps: noise levels visited before the final 0 (on a discrete schedule, levels that fall on the same
            timestep count once).
        rho: the schedule's exponent (7: EDM's; None: the EDM model's own, 7 on a discrete schedule).
        sigma_max: the first level (None: the model's own; on a discrete schedule its last timestep's, at most 80).
    """

    def __init__(self, num_steps: int = 18, rho: float | None = None, sigma_max: float | None = None) -> None:
        super().__init__(num_steps)
        if num_steps is None:
            raise ValueError(f"{type(self).__name__} needs a number of steps")
        if (rho is not None and rho <= 0) or (sigma_max is not None and sigma_max <= 0):
            raise ValueError(f"rho and sigma_max must be > 0, got {rho} and {sigma_max}")
        self.rho, self.sigma_max = rho, sigma_max

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps}, rho={self.rho}, sigma_max={self.sigma_max})"

    def sigmas(self, schedule) -> Tensor:
        """The noise levels (n + 1,) float64, descending to 0, on ``schedule``."""
        _check_schedule(self, schedule)
        options = {} if self.sigma_max is None else {"sigma_max": self.sigma_max}
        if self.rho is not None:
            options["rho"] = self.rho
        return schedule.sampling_sigmas(self.num_steps, **options)

    def timesteps(self, schedule) -> list[float]:
        """The noise levels visited, one per call of the step callback (the final 0 excluded)."""
        return self.sigmas(schedule)[:-1].tolist()

    @torch.no_grad()
    def sample(self, denoise, x, schedule, rng=None, callback=None):
        """Scale the standard normal ``x`` (B, ...) to the first noise level and :meth:`solve` down to 0."""
        sigmas = self.sigmas(schedule)
        start = schedule.sigma_prior(x, float(sigmas[0]))
        return self.solve(schedule.sigma_denoiser(denoise), start, sigmas.tolist(), rng, callback)

    @abstractmethod
    def solve(
        self,
        denoise: SigmaDenoiser,
        x: Tensor,
        sigmas: list[float],
        rng: SampleRNG | None,
        callback: StepCallback | None,
    ) -> Tensor:
        """From x (B, ...) at sigmas[0] to the data at sigmas[-1] = 0, with D = ``denoise``."""


def _check_schedule(sampler: Sampler, schedule) -> None:
    if not hasattr(schedule, "sigma_denoiser"):
        raise ValueError(f"{type(sampler).__name__} needs a schedule with noise levels, got {type(schedule).__name__}")


def report(callback: StepCallback | None, i: int, sigma: float, x: Tensor, denoised: Tensor) -> None:
    """Call ``callback`` with the step's record (``t`` is the noise level sigma here)."""
    if callback is not None:
        callback({"i": i, "t": sigma, "x": x, "denoised": denoised})
