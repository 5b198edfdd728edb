"""Exponential moving average of a network's weights, as families keep for sampling and evaluation."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(net: nn.Module, decay: float) -> AveragedModel | None:
    """A frozen EMA copy of ``net`` (weights and buffers such as BatchNorm statistics), or None when
    ``decay`` is 0. Update it with ``ema.update_parameters(net)`` after each optimizer step; it is a
    sub-module, so Lightning checkpoints it and moves it across devices."""
    if not 0 <= decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    if decay == 0:
        return None
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    return ema.requires_grad_(False)
