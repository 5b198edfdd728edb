"""Optimization parts shared by families: weight-decay parameter groups, a warm-up + cosine schedule, and
the synchronization of one network's step across processes for the families that step their networks apart.

All plain PyTorch: :func:`decay_groups` returns the param-group dicts any ``torch.optim`` optimizer
takes, :class:`WarmupCosineLR` is an ``LRScheduler`` a YAML file can name as ``lr_scheduler``, and
:func:`synchronize_step` is one ``torch.distributed.all_reduce`` over a module's gradients and buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two param groups: weights of linear/conv/recurrent layers with ``weight_decay``, and everything else
    (biases, norm scales, embeddings, tied copies of them) with none.

    Decoupled weight decay (AdamW, Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) is meant to
    shrink weight matrices; decaying norm gains, biases or embedding rows only fights the model. A parameter
    shared by two modules (tied embedding and output head) counts as an embedding.
    """
    no_decay: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if isinstance(sub, NO_DECAY_MODULES) or name.startswith("bias") or param.dim() < 2:
                no_decay[id(param)] = param
    decay = [p for p in module.parameters() if id(p) not in no_decay and p.requires_grad]
    rest = [p for p in no_decay.values() if p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def optimizer_config(
    optimizer: Optimizer,
    scheduler_factory: Callable[[Optimizer], LRScheduler] | None,
    interval: Literal["step", "epoch"] = "step",
):
    """What ``configure_optimizers`` returns for ``optimizer`` and, when given, a scheduler built by
    ``scheduler_factory`` that Lightning steps after every optimizer step (``"step"``) or every epoch."""
    if interval not in ("step", "epoch"):
        raise ValueError(f"a scheduler interval is 'step' or 'epoch', got {interval!r}")
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler_factory(optimizer), "interval": interval}}


class WarmupCosineLR(LRScheduler):
    """Linear warm-up to each group's learning rate, then cosine decay to ``min_lr``, then ``min_lr``.

    The schedule of GPT-2/3 training as nanoGPT writes it: step ``s < warmup_steps`` uses
    ``lr * (s + 1) / (warmup_steps + 1)``; from ``warmup_steps`` to ``decay_steps`` the rate follows half a
    cosine from ``lr`` down to ``min_lr`` (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983,
    without restarts); after ``decay_steps`` it stays at ``min_lr``. Step it once per optimizer step.

    Args:
        optimizer: the wrapped optimizer (its groups' ``lr`` are the peak rates).
        warmup_steps: steps of linear warm-up (0: none).
        decay_steps: the step at which the decay reaches ``min_lr`` (usually ``trainer.max_steps``).
        min_lr: the floor, an absolute learning rate (nanoGPT: a tenth of the peak).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, decay_steps: int, min_lr: float = 0.0,
                 last_epoch: int = -1) -> None:  # fmt: skip
        if warmup_steps < 0 or decay_steps <= warmup_steps:
            raise ValueError(
                f"WarmupCosineLR needs 0 <= warmup_steps < decay_steps, got warmup_steps={warmup_steps}, "
                f"decay_steps={decay_steps}; set decay_steps to the run's max_steps"
            )
        if min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.warmup_steps, self.decay_steps, self.min_lr = warmup_steps, decay_steps, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The rates of the current step (``self.last_epoch`` counts steps here)."""
        return [self.rate(base, self.last_epoch) for base in self.base_lrs]

    def rate(self, peak: float, step: int) -> float:
        """The learning rate at ``step`` for a group whose peak rate is ``peak``."""
        if step < self.warmup_steps:
            return peak * (step + 1) / (self.warmup_steps + 1)
        if step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - self.min_lr)


def synchronize_step(module: nn.Module, finite: bool = True) -> bool:
    """Make one optimizer step of ``module`` agree across processes with one ``all_reduce``; return whether
    ``finite`` holds on every rank.

    What DDP does around a backward and a forward, for one network only (the GAN family steps G and D with
    separate optimizers and runs each backward under ``no_sync``): ``module``'s gradients are averaged over
    the ranks, its floating buffers (BatchNorm running statistics) take rank 0's values (DDP's
    ``broadcast_buffers``), and the ranks' ``finite`` flags (whether the loss was finite) are combined, all in
    one flat float32 tensor, so a step costs one collective and one wait for the slowest rank, not three.
    A parameter without a gradient counts as zero (DDP with ``find_unused_parameters``); integer buffers
    (BatchNorm's step count) are equal on every rank by construction and left alone. Every rank must call
    this for the same module. In one process only ``finite`` is returned.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return finite
    world, rank = dist.get_world_size(), dist.get_rank()
    params = [p for p in module.parameters() if p.requires_grad]
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    parts = [p.grad.reshape(-1).float() / world for p in params]  # summed over ranks: the mean
    parts += [(b if rank == 0 else torch.zeros_like(b)).reshape(-1).float() for b in buffers]  # rank 0's
    flag = torch.tensor([0.0 if finite else 1.0], device=parts[0].device if parts else None)
    flat = torch.cat([*parts, flag])  # (total + 1,)
    dist.all_reduce(flat)
    tensors = [p.grad for p in params] + buffers
    for tensor, value in zip(tensors, flat[:-1].split([t.numel() for t in tensors]), strict=True):
        tensor.copy_(value.view_as(tensor))
    return bool(flat[-1] == 0)
