"""Noise schedules of the discrete-time, variance-preserving diffusion process (Ho et al. 2020).

q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) for t = 0 .. T-1 (0-based: t = 0 is the
first noising step, so x_{t=0} is already slightly noisy and the data is "x_{-1}").

A schedule is a plain, parameter-free object (the pattern of diffusers' schedulers): its tables are
computed once in float64 and handed out as float32 copies on the device of the timesteps they are
indexed with (one cached copy per device), so a schedule follows the family to any device without
being an ``nn.Module`` and without being stored in the checkpoint's weights; the YAML that built it is
the record (``save_hyperparameters``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from genlit.diffusion.edm import karras_sigmas

VP_SIGMA_MAX = 80.0
"""Where the sigma samplers start a discrete schedule at most (EDM's sigma_max): the cosine schedule's last
timestep has sigma ~2e4, and above ~80 the data is under 1% of x, so levels there would waste steps."""


class NoiseSchedule:
    """A variance-preserving schedule given by its betas (T,); see :class:`LinearSchedule` and
    :class:`CosineSchedule`.

    Attributes:
        num_steps: T, the number of diffusion steps.
        betas / alphas / alpha_bar: float64 tables (T,): beta_t, 1 - beta_t and prod_{s<=t} alpha_s;
        signal / sigma / snr: sqrt(alpha_bar), sqrt(1 - alpha_bar) and their squared ratio, computed in
            float64 (1 - alpha_bar in float32 would lose 3 digits at t = 0).
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("a noise schedule needs at least 2 betas, each in (0, 1)")
        self.num_steps = len(betas)
        self.betas = betas  # (T,)
        self.alphas = 1.0 - betas  # (T,)
        self.alpha_bar = torch.cumprod(self.alphas, 0)  # (T,)
        self.signal, self.sigma = self.alpha_bar.sqrt(), (1 - self.alpha_bar).sqrt()  # (T,) each
        self.snr_table = self.alpha_bar / (1 - self.alpha_bar)  # (T,)
        self._tables: dict[tuple[str, torch.device], Tensor] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tables": {}}  # device copies are a cache, not state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps})"

    # ------------------------------------------------------------------------------------ lookups
    def table(self, name: str, device: torch.device | str) -> Tensor:
        """The float32 copy of table ``name`` (``betas``, ``alpha_bar``, ``sigma``, ...) on ``device``, cached."""
        key = (name, torch.device(device))
        if key not in self._tables:
            self._tables[key] = getattr(self, name).to(device=key[1], dtype=torch.float32)
        return self._tables[key]

    def lookup(self, name: str, t: Tensor, clean: float) -> Tensor:
        """Table ``name`` at integer timesteps t (B,) -> (B,) float32; t = -1 (the clean data) gives ``clean``."""
        table = self.table(name, t.device)
        return torch.where(t >= 0, table[t.clamp(min=0)], torch.full_like(table[0], clean))

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """alpha_bar_t for integer timesteps t (B,) -> (B,); t = -1 gives 1 (the clean data)."""
        return self.lookup("alpha_bar", t, 1.0)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) for timesteps t (B,) -> (B,)."""
        return self.lookup("snr_table", t, float("inf"))

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for t (B,), shaped (B, 1, ...) to broadcast over ``ndim`` dims."""
        shape = (-1, *[1] * (ndim - 1))
        return self.lookup("signal", t, 1.0).view(shape), self.lookup("sigma", t, 0.0).view(shape)

    # ------------------------------------------------------------------------------------ forward process
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, for x0 and noise (B, ...) and t (B,)."""
        signal, sigma = self.coefficients(t, x0.dim())
        return signal * x0 + sigma * noise  # (B, ...)

    def sample_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Timesteps drawn uniformly from {0, ..., T-1}: (batch,) int64."""
        return torch.randint(self.num_steps, (batch,), device=device, generator=generator)

    def respaced(self, num_steps: int | None) -> Tensor:
        """``num_steps`` timesteps, evenly spaced from T-1 down to 0, int64 (descending).

        The last timestep T-1 is always included ("trailing" spacing, Lin et al. 2023,
        https://arxiv.org/abs/2305.08891), so sampling starts from the noise the model was trained on;
        ``None`` or T gives every step.
        """
        n = self.num_steps if num_steps is None else num_steps
        if not 1 <= n <= self.num_steps:
            raise ValueError(f"the number of sampling steps must be in [1, {self.num_steps}], got {n}")
        return torch.linspace(self.num_steps - 1, 0, n, dtype=torch.float64).round().long()  # (n,)

    # ---------------------------------------------------------- the variance-exploding view (sigma samplers)
    # x_t = a x0 + s eps is x = x_t / a = x0 + sigma eps with sigma = s / a: the view of the continuous-sigma
    # samplers (genlit.diffusion.samplers.SigmaSampler; Karras et al. 2022, section 2).
    @property
    def ve_sigmas(self) -> Tensor:
        """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), the noise level of each timestep: (T,) float64, rising."""
        return self.sigma / self.signal

    def sampling_sigmas(self, num_steps: int, rho: float = 7.0, sigma_max: float | None = None) -> Tensor:
        """EDM's noise levels (:func:`~genlit.diffusion.edm.karras_sigmas`) from ``sigma_max`` (default: the last
        timestep's sigma, at most :data:`VP_SIGMA_MAX`) down to the first timestep's, each moved to the nearest
        timestep's (in log sigma; repeats dropped, so a few fewer than ``num_steps`` can remain where the
        timesteps are sparse), then 0: (n + 1,) float64, descending. The net knows only its timesteps."""
        table = self.ve_sigmas
        top = min(float(table[-1]), VP_SIGMA_MAX) if sigma_max is None else sigma_max
        if not table[0] < top <= table[-1]:
            raise ValueError(f"sigma_max must be in ({float(table[0]):.4g}, {float(table[-1]):.4g}] for this schedule")
        wanted = karras_sigmas(num_steps, float(table[0]), top, rho)[:-1]  # (num_steps,)
        steps = torch.unique_consecutive(self.timestep_of(wanted))
        return torch.cat([table[steps], torch.zeros(1, dtype=torch.float64)])

    def timestep_of(self, sigma: Tensor) -> Tensor:
        """The timestep (int64, shaped like ``sigma``) whose noise level is nearest ``sigma`` in log space."""
        log_table = self.ve_sigmas.log()  # (T,)
        distance = (torch.as_tensor(sigma, dtype=torch.float64).log()[..., None] - log_table).abs()
        return distance.argmin(-1)

    def sigma_prior(self, noise: Tensor, sigma_max: float) -> Tensor:
        """The starting point at ``sigma_max``, the last timestep's level: the pure noise x_{T-1} = noise of the
        discrete samplers, divided by sqrt(alpha_bar) = 1 / sqrt(1 + sigma_max^2)."""
        return noise * math.sqrt(1 + sigma_max**2)

    def sigma_denoiser(
        self, denoise: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    ) -> Callable[[Tensor, float], Tensor]:
        """D(x, sigma) = x0_hat from the family's ``denoise(x_t, t) -> (x0_hat, eps_hat)``: sigma is taken to its
        nearest timestep t (exact for :meth:`sampling_sigmas`) and x to x_t = x / sqrt(1 + sigma_t^2)."""

        def d(x: Tensor, sigma: float) -> Tensor:
            t = int(self.timestep_of(torch.tensor(float(sigma))))
            scale = 1 / math.sqrt(1 + float(self.ve_sigmas[t]) ** 2)
            return denoise(x * scale, torch.full((len(x),), t, device=x.device, dtype=torch.long))[0]

        return d


class LinearSchedule(NoiseSchedule):
    """Betas rising linearly from ``beta_start`` to ``beta_end`` over ``num_steps`` (Ho et al. 2020,
    https://arxiv.org/abs/2006.11239: 1e-4 to 0.02 over 1000 steps)."""

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
        super().__init__(torch.linspace(beta_start, beta_end, _check_steps(num_steps), dtype=torch.float64))
        self.beta_start, self.beta_end = beta_start, beta_end


class CosineSchedule(NoiseSchedule):
    """alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), betas clipped at
    ``max_beta`` (Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672: s = 0.008, clip 0.999)."""

    def __init__(self, num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> None:
        if offset <= 0 or not 0 < max_beta < 1:
            raise ValueError(f"need offset > 0 and 0 < max_beta < 1, got {offset} and {max_beta}")
        steps = _check_steps(num_steps)

        def f(t: Tensor) -> Tensor:
            return torch.cos((t / steps + offset) / (1 + offset) * math.pi / 2) ** 2

        grid = torch.arange(steps + 1, dtype=torch.float64)  # (T+1,)
        alpha_bar = f(grid) / f(grid[:1])  # (T+1,), alpha_bar[0] = 1
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)  # (T,)
        super().__init__(betas)
        self.offset, self.max_beta = offset, max_beta


def _check_steps(num_steps: int) -> int:
    if num_steps < 2:
        raise ValueError(f"a noise schedule needs num_steps >= 2, got {num_steps}")
    return int(num_steps)
