"""What the denoising network predicts, and the one place where predictions are converted.

For x_t = a x_0 + s eps with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t) (so a^2 + s^2 = 1):

- ``eps``: the noise (Ho et al. 2020);
- ``x0``: the clean data;
- ``v``: the velocity v = a eps - s x_0 (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512),
  from which x_0 = a x_t - s v and eps = s x_t + a v.

Every conversion is affine in the network output for fixed (x_t, t), so classifier-free guidance
can mix raw outputs whatever the target.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from genlit.diffusion.schedules import NoiseSchedule

PredictionTarget = Literal["eps", "x0", "v"]


def check_target(name: str) -> None:
    """Raise one clear ValueError for a prediction target that is not ``eps``, ``x0`` or ``v``."""
    if name not in get_args(PredictionTarget):
        raise ValueError(f"unknown prediction target {name!r}; use one of {', '.join(get_args(PredictionTarget))}")


def training_target(kind: PredictionTarget, x0: Tensor, noise: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The regression target of ``kind`` for clean data x0 and noise (B, ...) at timesteps t (B,)."""
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    a, s = schedule.coefficients(t, x0.dim())  # (B, 1, ..) each
    return a * noise - s * x0  # (B, ...)


def split_prediction(
    kind: PredictionTarget, output: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule, clip: bool = False
) -> tuple[Tensor, Tensor]:
    """(x0_hat, eps_hat) from the network ``output`` of ``kind`` at (x_t, t).

    With ``clip`` the x_0 estimate is clamped to the data range [-1, 1] and eps is recomputed from the
    clamped x_0, so both stay consistent with x_t (as in Ho et al.'s sampler).
    """
    a, s = schedule.coefficients(t, x_t.dim())  # (B, 1, ..) each
    if kind == "eps":
        x0 = (x_t - s * output) / a
    elif kind == "x0":
        x0 = output
    else:
        x0 = a * x_t - s * output
    if clip:
        x0 = x0.clamp(-1, 1)
    elif kind == "eps":
        return x0, output
    elif kind == "v":
        return x0, s * x_t + a * output
    return x0, (x_t - a * x0) / s  # (B, ...) each


def min_snr_weight(kind: PredictionTarget, snr: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556) for per-example
    MSE losses on target ``kind`` at the timesteps' SNRs (B,) -> (B,).

    The x_0 loss times min(SNR, gamma); expressed on eps and v targets that is min(SNR, gamma) / SNR and
    min(SNR, gamma) / (SNR + 1).
    """
    clipped = torch.clamp(snr, max=gamma)
    if kind == "eps":
        return clipped / snr
    if kind == "v":
        return clipped / (snr + 1)
    return clipped
