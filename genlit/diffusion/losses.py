"""The diffusion training loss as a function of the network (DiT's ``training_losses(model, x, t)`` pattern,
https://github.com/facebookresearch/DiT): any denoising net, on data of any shape (pixels or latents)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlit.diffusion.schedules import NoiseSchedule
from genlit.diffusion.targets import PredictionTarget, min_snr_weight, training_target


def training_losses(
    net: nn.Module,
    x0: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    prediction: PredictionTarget,
    noise: Tensor | None = None,
    labels: Tensor | None = None,
    min_snr_gamma: float | None = None,
) -> Tensor:
    """Per-example MSE (B,) of ``net(x_t, t, labels)`` against the ``prediction`` target, for clean x0 (B, ...)
    noised to x_t at timesteps t (B,) with ``noise`` (default: fresh, shaped like x0), optionally weighted by
    min-SNR-gamma (Hang et al. 2023, https://arxiv.org/abs/2303.09556)."""
    noise = torch.randn_like(x0) if noise is None else noise  # (B, ...)
    x_t = schedule.add_noise(x0, noise, t)
    target = training_target(prediction, x0, noise, t, schedule)
    out = net(x_t, t, labels).float()  # (B, ...)
    loss = (out - target).square().flatten(1).mean(1)  # (B,)
    if min_snr_gamma is not None:
        loss = loss * min_snr_weight(prediction, schedule.snr(t), min_snr_gamma)
    return loss
