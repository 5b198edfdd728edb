"""The sampler interface: a parameter-free object that owns its loop and takes the denoiser as an argument.

A denoiser is any callable ``denoise(x_t, t) -> (x0_hat, eps_hat)`` on a batch x_t (B, ...) at integer
timesteps t (B,); the diffusion family builds one from its network, prediction target and guidance. A
sampler's :meth:`Sampler.sample` runs the whole reverse process (k-diffusion's
``sample(model, x, sigmas, extra_args, callback)``, https://github.com/crowsonkb/k-diffusion), so a step that
evaluates the denoiser twice (Heun) or remembers earlier steps (DPM-Solver++) is one new class, chosen by
class name or path in YAML (``sampler: {class_path: DDIMSampler, init_args: {num_steps: 50}}``) and on the
command line (``genlit sample --sampler DDIMSampler --sampler.num_steps 50``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from genlit.diffusion.schedules import NoiseSchedule
from genlit.seeding import SampleRNG

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``denoise(x_t, t) -> (x0_hat, eps_hat)``, each shaped like x_t."""

StepCallback = Callable[[dict], None]
"""Called after every step with ``{"i": step index, "t": timestep, "x": the new x, "denoised": x0_hat}``."""


class Sampler(ABC):
    """Base class of the reverse-process samplers.

    Args:
        num_steps: number of denoising steps (evenly spaced timesteps of the schedule,
            :meth:`~genlit.diffusion.schedules.NoiseSchedule.respaced`); ``None`` uses every step.
    """

    def __init__(self, num_steps: int | None = None) -> None:
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 (or null for every step), got {num_steps}")
        self.num_steps = num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps})"

    def timesteps(self, schedule: NoiseSchedule) -> list[int]:
        """The timesteps visited, descending, from T - 1 (pure noise) towards 0 (a discrete schedule only)."""
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(
                f"{type(self).__name__} runs on discrete timesteps; a model with {type(schedule).__name__} samples "
                "with EulerSampler, HeunSampler or DPMSolverSampler"
            )
        return schedule.respaced(self.num_steps).tolist()

    @abstractmethod
    def sample(
        self,
        denoise: Denoiser,
        x: Tensor,
        schedule: NoiseSchedule,
        rng: SampleRNG | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Run the reverse process from ``x`` (B, ...), the pure noise at t = T - 1, to the data: x_0 (B, ...).

        ``rng`` draws the fresh noise of stochastic steps (per sample: :class:`~genlit.seeding.SampleRNG`);
        None uses torch's global generator. ``callback`` is called after every step.
        """


class StepSampler(Sampler):
    """A sampler whose step from t to t_prev needs only the denoiser's output at t: the loop is here,
    subclasses define :meth:`step`. t_prev = -1 stands for the clean data (alpha_bar = 1)."""

    @abstractmethod
    def step(
        self, x_t: Tensor, t: int, t_prev: int, x0: Tensor, eps: Tensor, schedule: NoiseSchedule, rng: SampleRNG | None
    ) -> Tensor:
        """x_{t_prev} from x_t and the denoiser's (x0_hat, eps_hat) at t."""

    @torch.no_grad()
    def sample(self, denoise, x, schedule, rng=None, callback=None):
        """Call the denoiser once per timestep and :meth:`step` to the next one."""
        timesteps = self.timesteps(schedule)
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            x0, eps = denoise(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
            x = self.step(x, t, t_prev, x0, eps, schedule, rng)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": x0})
        return x


def alpha_bars(schedule: NoiseSchedule, t: int, t_prev: int, device) -> tuple[Tensor, Tensor]:
    """alpha_bar at t and at t_prev (1 at t_prev = -1), 0-dim tensors on ``device``."""
    pair = schedule.alpha_bar_at(torch.tensor([t, t_prev], device=device))  # (2,)
    return pair[0], pair[1]


def noise_like(x: Tensor, rng: SampleRNG | None) -> Tensor:
    """Fresh standard normal noise shaped like x (B, ...), per sample when ``rng`` is given."""
    return torch.randn_like(x) if rng is None else rng.randn_like(x)
