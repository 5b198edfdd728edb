"""Exponential moving average of a network's weights, as families keep for sampling and evaluation."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmup_ema_multi_avg_fn(decay: float):
    """EMA update whose decay after n updates is min(decay, (1 + n) / (10 + n)): early averages forget the
    initial weights quickly, long runs reach ``decay`` (the ``num_updates`` rule of TensorFlow's
    ExponentialMovingAverage, common in DDPM code). The decay stays a device tensor: no host sync. Integer
    buffers (BatchNorm's ``num_batches_tracked``) are counts, not weights: they are copied."""

    @torch.no_grad()
    def update(ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor) -> None:
        if not ema_params[0].is_floating_point():  # AveragedModel groups tensors by dtype
            for ema_param, param in zip(ema_params, params, strict=True):
                ema_param.copy_(param)
            return
        n = num_averaged.to(ema_params[0].dtype)
        current = torch.clamp((1 + n) / (10 + n), max=decay)
        torch._foreach_lerp_(ema_params, params, 1 - current)

    return update


def make_ema(net: nn.Module, decay: float, warmup: bool = False) -> AveragedModel | None:
    """A frozen EMA copy of ``net`` (weights and buffers such as BatchNorm statistics), or None when
    ``decay`` is 0. ``warmup`` ramps the decay up as in :func:`warmup_ema_multi_avg_fn`. Update it with
    ``ema.update_parameters(net)`` after each optimizer step; it is a sub-module, so Lightning checkpoints
    it (with its update count) and moves it across devices."""
    if not 0 <= decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    if decay == 0:
        return None
    average = warmup_ema_multi_avg_fn(decay) if warmup else get_ema_multi_avg_fn(decay)
    ema = AveragedModel(net, multi_avg_fn=average, use_buffers=True)
    return ema.requires_grad_(False)
