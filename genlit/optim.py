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


def decay_groups(module: nn.Module, weight_decay: float, hidden: nn.Module | None = None) -> list[dict]:
    """Two param groups: weights of linear/conv/recurrent layers with ``weight_decay``, and everything else
    (biases, norm scales, embeddings, tied copies of them) with none.

    Decoupled weight decay (AdamW, Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) is meant to
    shrink weight matrices; decaying norm gains, biases or embedding rows only fights the model. A parameter
    shared by two modules (tied embedding and output head) counts as an embedding.

    ``hidden`` (a sub-module, e.g. a transformer's blocks) splits off its decayed 2-D weights, the hidden
    matrices, into a third group, and every group carries ``use_muon`` (True for the hidden matrices): what
    :class:`MuonAdamW` routes to Muon. Other optimizers ignore the key. Empty groups are left out.
    """
    no_decay: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if isinstance(sub, NO_DECAY_MODULES) or name.startswith("bias") or param.dim() < 2:
                no_decay[id(param)] = param
    decay = [p for p in module.parameters() if id(p) not in no_decay and p.requires_grad]
    rest = [p for p in no_decay.values() if p.requires_grad]
    if hidden is None:
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    inside = {id(p) for p in hidden.parameters()}
    matrices = [p for p in decay if id(p) in inside and p.dim() == 2]
    chosen = {id(p) for p in matrices}
    groups = [
        {"params": matrices, "weight_decay": weight_decay, "use_muon": True},
        {"params": [p for p in decay if id(p) not in chosen], "weight_decay": weight_decay, "use_muon": False},
        {"params": rest, "weight_decay": 0.0, "use_muon": False},
    ]
    return [group for group in groups if group["params"]]


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


class WarmupStableDecayLR(LRScheduler):
    """Warm-up, then a constant rate, then a linear cool-down to ``final_fraction`` of it: the trapezoidal
    ("warmup-stable-decay") schedule of the modded-nanogpt speedrun (Hägele et al. 2024,
    https://arxiv.org/abs/2405.18392, for why it matches cosine at a fixed length and suits any length).

    A factor of each group's own rate, so groups with different peaks (Muon's matrices, Adam's embeddings)
    keep their ratio. Step ``s``: ``(s + 1) / (warmup_steps + 1)`` during warm-up; 1 until ``total_steps -
    cooldown_steps``; then linearly down to ``final_fraction`` at ``total_steps``, and that after.

    Args:
        optimizer: the wrapped optimizer (its groups' ``lr`` are the peak rates).
        total_steps: the run's length (usually ``trainer.max_steps``).
        cooldown_steps: steps of the final linear decay (the speedrun: 40-60% of the run).
        warmup_steps: steps of linear warm-up (0: none).
        final_fraction: the factor reached at ``total_steps``.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, cooldown_steps: int, warmup_steps: int = 0,
                 final_fraction: float = 0.0, last_epoch: int = -1) -> None:  # fmt: skip
        if not 0 <= warmup_steps <= total_steps - cooldown_steps or cooldown_steps < 0:
            raise ValueError(
                f"WarmupStableDecayLR needs 0 <= warmup_steps <= total_steps - cooldown_steps and cooldown_steps "
                f">= 0, got warmup {warmup_steps}, cool-down {cooldown_steps}, total {total_steps}; set total_steps "
                "to the run's max_steps"
            )
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(f"final_fraction must lie in [0, 1], got {final_fraction}")
        self.total_steps, self.cooldown_steps = total_steps, cooldown_steps
        self.warmup_steps, self.final_fraction = warmup_steps, final_fraction
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The rates of the current step (``self.last_epoch`` counts steps here)."""
        factor = self.factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]

    def factor(self, step: int) -> float:
        """The multiple of the peak rate at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        cooldown_start = self.total_steps - self.cooldown_steps
        if step < cooldown_start:
            return 1.0
        if step >= self.total_steps:  # also without a cool-down (cooldown_steps=0)
            return self.final_fraction
        progress = min(1.0, (step - cooldown_start) / max(1, self.cooldown_steps))
        return 1.0 - progress * (1.0 - self.final_fraction)


class MuonAdamW(Optimizer):
    """Muon for the hidden weight matrices and AdamW for everything else, as one optimizer Lightning steps.

    Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces each matrix's momentum update by
    its nearest semi-orthogonal matrix (a few Newton-Schulz iterations): every direction of the update gets the
    same size, which lets the matrices learn at a rate Adam could not take. It suits the hidden matrices only;
    embeddings, the output head, norms and biases stay with AdamW (the speedrun's split). The two halves are
    ``torch.optim.Muon`` and ``torch.optim.AdamW``, not rewritten: this class routes the param groups (a group
    with ``use_muon: True``, from :func:`decay_groups` with ``hidden``, goes to Muon), and exposes their groups
    and one state as its own, so LR schedulers, gradient clipping and checkpoints see one optimizer.

    Args:
        params: param groups, those of Muon tagged ``use_muon: True`` (2-D weights only).
        lr: AdamW's rate (embeddings, head, norms, biases).
        muon_lr: Muon's rate (the hidden matrices; the speedrun: 0.02-0.05 with ``adjust_lr_fn`` "original").
        betas / eps: AdamW's.
        weight_decay: the default of groups that do not set their own (the families' groups do).
        momentum / nesterov / ns_steps / adjust_lr_fn: Muon's (``torch.optim.Muon``).
        fused: AdamW's fused kernel.
    """

    def __init__(self, params, lr: float = 1e-3, muon_lr: float = 0.02, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, adjust_lr_fn: str | None = None, fused: bool | None = None) -> None:  # fmt: skip
        groups = [dict(g) if isinstance(g, dict) else {"params": [g]} for g in params]
        flags = [bool(g.pop("use_muon", False)) for g in groups]
        muon = [g for g, flag in zip(groups, flags, strict=True) if flag]
        adam = [g for g, flag in zip(groups, flags, strict=True) if not flag]
        if not muon:
            raise ValueError(
                "MuonAdamW got no param group tagged use_muon; use it with a family whose optimized_parameters tag "
                "the hidden matrices (e.g. genlit.families.autoregressive.AutoregressiveLM), or use AdamW"
            )
        for group in muon:
            flat = list(group["params"])
            if any(p.dim() != 2 for p in flat):
                raise ValueError("Muon updates 2-D weight matrices only; tag only those groups use_muon")
            group["params"] = flat
            group.setdefault("lr", muon_lr)
        self._muon = torch.optim.Muon(muon, lr=muon_lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)  # fmt: skip
        adam_groups = []
        if adam:
            self._adam = torch.optim.AdamW(adam, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
            adam_groups = self._adam.param_groups
        for group in self._muon.param_groups:
            group["use_muon"] = True
        for group in adam_groups:
            group["use_muon"] = False
        everything = [p for g in self._muon.param_groups + adam_groups for p in g["params"]]
        super().__init__(everything, {"lr": lr})
        self.param_groups = self._muon.param_groups + adam_groups
        self._num_muon = len(self._muon.param_groups)
        self._link()

    def _link(self) -> None:
        """Point the two inner optimizers at this optimizer's groups and state (the same objects)."""
        self._muon.param_groups = self.param_groups[: self._num_muon]
        self._muon.state = self.state
        if hasattr(self, "_adam"):
            self._adam.param_groups = self.param_groups[self._num_muon :]
            self._adam.state = self.state

    @torch.no_grad()
    def step(self, closure=None):
        """One step of both halves (after evaluating ``closure`` with gradients, if given)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._muon.step()
        if hasattr(self, "_adam"):
            self._adam.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the groups and state, then re-link the inner optimizers to the new objects."""
        super().load_state_dict(state_dict)
        self._link()


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
