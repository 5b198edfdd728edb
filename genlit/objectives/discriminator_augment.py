"""What a GAN's discriminator sees: differentiable augmentation policies the GAN family takes from YAML.

A policy is applied to every image D sees, real and fake, in D's step and G's (the gradients reach G through
it), so D cannot tell the augmentations apart from the data and they do not leak into G's samples:

* :class:`DiffAugment` (Zhao et al. 2020, https://arxiv.org/abs/2006.10738): fixed colour, translation and
  cutout transforms on every image.
* :class:`AdaptiveAugment` (ADA, Karras et al. 2020, https://arxiv.org/abs/2006.06676): each of the paper's
  transforms with probability ``p``, ``p`` adapted from the sign of D's outputs on real images.

:class:`AdaptiveAugmentProbability` is ADA's controller of ``p``. All are plain objects without parameters;
the family stores :meth:`DiscriminatorAugment.state_dict` in its
checkpoints, so a resumed run continues with the same ``p``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from genlit.objectives.augmentation import (
    ADA_OPS,
    AugmentOp,
    DiffAugmentPolicy,
    adaptive_augment,
    check_augment_ops,
    check_diffaugment_policy,
    diff_augment,
)


class AdaptiveAugmentProbability:
    """The ADA probability ``p`` and its controller (Karras et al. 2020, https://arxiv.org/abs/2006.06676,
    Section 3): plain Python state, no parameters, checkpointed through ``state_dict``.

    Call :meth:`update` with the discriminator's raw outputs on the *real* batch at every discriminator
    step. It accumulates ``[sum over samples of sign(D(real)), number of samples]`` (a sample's sign is
    the mean sign of its outputs, so patch discriminators count per image). Every ``interval``-th call it
    sets ``r_t = sign_sum / count`` (+1: D is confident on every real, i.e. overfitting) and moves
    ``p += sign(r_t - target) * count / speed_images``, clamped to [0, max_p]. With a constant batch B,
    ``count = B * interval``, the paper's step; the paper's values are target 0.6, interval 4 and
    speed_images 500k (p can go from 0 to 1 in 500k real images).

    Under DDP pass ``reduce``, a callable that sums a tensor over all ranks (e.g. in a LightningModule
    ``lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")``): it is applied to the (2,)
    accumulator only at the ``interval``-th call, so every rank must call :meth:`update` equally often;
    all ranks then see the global count and agree on ``p``. The accumulator stays on the logits' device
    between adjustments (no host sync per step).
    """

    def __init__(
        self, p: float = 0.0, target: float = 0.6, interval: int = 4, speed_images: float = 500_000, max_p: float = 1.0
    ) -> None:
        if not (0.0 <= max_p <= 1.0 and 0.0 <= p <= max_p):
            raise ValueError(f"need 0 <= p <= max_p <= 1, got p={p}, max_p={max_p}")
        if interval < 1 or speed_images <= 0 or not -1.0 <= target <= 1.0:
            got = f"interval={interval}, speed_images={speed_images}, target={target}"
            raise ValueError(f"need interval >= 1, speed_images > 0 and -1 <= target <= 1, got {got}")
        self.target, self.interval, self.speed_images, self.max_p = float(target), int(interval), speed_images, max_p
        self._p, self._r_t, self._calls = float(p), None, 0
        self._acc: Tensor | None = None  # (2,) [sign_sum, count] since the last adjustment

    @property
    def p(self) -> float:
        """The current augmentation probability, to pass to :func:`adaptive_augment`."""
        return self._p

    @property
    def r_t(self) -> float | None:
        """The overfitting heuristic of the last adjustment (None before the first), for logging."""
        return self._r_t

    @property
    def accumulator(self) -> Tensor | None:
        """(2,) ``[sign_sum, count]`` gathered since the last adjustment on this rank (None when empty)."""
        return self._acc

    def update(self, real_logits: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Accumulate the signs of D's raw outputs on a real batch (B, ...); adjust ``p`` every ``interval``
        calls, after summing the accumulator over ranks with ``reduce`` (identity when None)."""
        if real_logits.dim() == 0 or real_logits.numel() == 0:
            raise ValueError(f"update needs D's outputs with a batch dimension, got shape {tuple(real_logits.shape)}")
        signs = real_logits.detach().float().reshape(real_logits.shape[0], -1).sign().mean(dim=1)  # (B,)
        step = torch.stack([signs.sum(), torch.full_like(signs[0], signs.shape[0])])  # (2,)
        self._acc = step if self._acc is None else self._acc.to(step.device) + step  # (2,)
        self._calls += 1
        if self._calls < self.interval:
            return
        total = self._acc if reduce is None else reduce(self._acc)  # (2,)
        sign_sum, count = (float(v) for v in total.tolist())
        self._acc, self._calls = None, 0
        self._r_t = sign_sum / count
        direction = (self._r_t > self.target) - (self._r_t < self.target)
        self._p = min(max(self._p + direction * count / self.speed_images, 0.0), self.max_p)

    def state_dict(self) -> dict[str, float | int | None]:
        """``p``, the last ``r_t`` and the pending accumulator as plain numbers (safe for weights_only loads)."""
        sign_sum, count = (0.0, 0.0) if self._acc is None else (float(v) for v in self._acc.tolist())
        return {"p": self._p, "r_t": self._r_t, "calls": self._calls, "sign_sum": sign_sum, "count": count}

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore what :meth:`state_dict` returned, so training resumes with the same ``p`` and accumulator."""
        self._p, self._calls = float(state["p"]), int(state["calls"])  # type: ignore[arg-type]
        self._r_t = None if state["r_t"] is None else float(state["r_t"])
        pending = torch.tensor([float(state["sign_sum"]), float(state["count"])])  # type: ignore[arg-type]
        self._acc = pending if self._calls > 0 else None  # (2,), moved to the logits' device on the next update


class DiscriminatorAugment:
    """Base of the augmentation policies: ``policy(images)`` augments a (B, C, H, W) batch in [-1, 1]."""

    def __call__(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def observe(self, real_logits: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """See D's raw outputs on this step's augmented real batch (the adaptive policy adapts from them);
        ``reduce`` sums a tensor over the processes of a distributed run."""

    @property
    def probability(self) -> float | None:
        """The augmentation probability to log as ``train/augment_p``; None for a fixed policy."""
        return None

    def state_dict(self) -> dict:
        """What a checkpoint must hold to resume the policy exactly."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class DiffAugment(DiscriminatorAugment):
    """DiffAugment: every transform of ``policy`` on every image (``color``, ``translation``, ``cutout``).

    The paper's choice for small datasets is all three; ``translation`` and ``cutout`` alone for grey images,
    where the colour transform only changes brightness and contrast.
    """

    def __init__(self, policy: Sequence[DiffAugmentPolicy] = ("color", "translation", "cutout")) -> None:
        check_diffaugment_policy(policy)
        self.policy = tuple(policy)

    def __call__(self, images: Tensor) -> Tensor:
        return diff_augment(images, self.policy)  # (B, C, H, W)


class AdaptiveAugment(DiscriminatorAugment):
    """ADA: each transform of ``ops`` with probability ``p``; every ``interval`` D steps ``p`` moves up when
    ``r_t = E[sign D(real)]`` exceeds ``target`` (D is overfitting) and down otherwise, fast enough to go from
    0 to 1 in ``speed_images`` real images (the paper: target 0.6, interval 4, 500k images).

    Args:
        ops: the transforms (default: the paper's ``bgc`` pipeline, blits, geometry and colour).
        target: the value of ``r_t`` that ``p`` is adjusted towards.
        interval: D steps between adjustments.
        speed_images: real images for ``p`` to go from 0 to 1 (shorter for short runs on small data).
        max_p: the ceiling of ``p`` (below 1 keeps some un-augmented images in front of D).
        initial_p: ``p`` at the start of training.
    """

    def __init__(
        self,
        ops: Sequence[AugmentOp] = ADA_OPS,
        target: float = 0.6,
        interval: int = 4,
        speed_images: float = 500_000,
        max_p: float = 1.0,
        initial_p: float = 0.0,
    ) -> None:
        check_augment_ops(ops)
        self.ops = tuple(ops)
        self.controller = AdaptiveAugmentProbability(initial_p, target, interval, speed_images, max_p)

    def __call__(self, images: Tensor) -> Tensor:
        return adaptive_augment(images, self.controller.p, self.ops)  # (B, C, H, W)

    def observe(self, real_logits: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Accumulate ``sign(D(real))``; adjust ``p`` every ``interval`` calls (summed over ranks by ``reduce``)."""
        self.controller.update(real_logits.detach(), reduce)

    @property
    def probability(self) -> float:
        """The current ``p``."""
        return self.controller.p

    def state_dict(self) -> dict:
        """``p``, the last ``r_t`` and the accumulator since the last adjustment."""
        return self.controller.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.controller.load_state_dict(state)
