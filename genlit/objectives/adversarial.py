"""Adversarial losses and discriminator penalties as plain functions on tensors.

Losses take the raw discriminator outputs (logits / critic values, any shape, usually (B,)) and
return scalar means over the batch, computed in float32 so they are safe under bf16 autocast:

* ``non_saturating``: Goodfellow et al. 2014 (https://arxiv.org/abs/1406.2661), with the
  non-saturating generator loss ``-log D(G(z))``; written with ``softplus`` so large logits
  neither overflow nor lose precision (``-log sigmoid(t) = softplus(-t)``).
* ``hinge``: Lim & Ye 2017 (https://arxiv.org/abs/1705.02894), Miyato et al. 2018
  (https://arxiv.org/abs/1802.05957).
* ``wasserstein``: Arjovsky et al. 2017 (https://arxiv.org/abs/1701.07875); needs a Lipschitz
  critic (see :func:`gradient_penalty`, or spectral norm).
* ``least_squares``: Mao et al. 2017 (https://arxiv.org/abs/1611.04076) with the 0-1-1 coding
  (fake label a = 0, real label b = 1, generator target c = 1) and the paper's 1/2 factors.

Adding a loss is one entry in ``_LOSSES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LossName = Literal["non_saturating", "hinge", "wasserstein", "least_squares"]


class _Loss(NamedTuple):
    discriminator: Callable[[Tensor, Tensor], Tensor]  # (real_logits, fake_logits) -> scalar
    generator: Callable[[Tensor], Tensor]  # fake_logits -> scalar


_LOSSES: dict[str, _Loss] = {
    "non_saturating": _Loss(
        discriminator=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
        generator=lambda fake: F.softplus(-fake).mean(),
    ),
    "hinge": _Loss(
        discriminator=lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
        generator=lambda fake: -fake.mean(),
    ),
    "wasserstein": _Loss(
        discriminator=lambda real, fake: fake.mean() - real.mean(),
        generator=lambda fake: -fake.mean(),
    ),
    "least_squares": _Loss(
        discriminator=lambda real, fake: 0.5 * (real - 1.0).square().mean() + 0.5 * fake.square().mean(),
        generator=lambda fake: 0.5 * (fake - 1.0).square().mean(),
    ),
}


def check_loss_name(name: str) -> None:
    """Raise a ValueError naming the allowed losses when ``name`` is not one of them."""
    if name not in _LOSSES:
        raise ValueError(f"unknown adversarial loss {name!r}; use one of {', '.join(_LOSSES)}")


def discriminator_loss(name: LossName, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator (critic) loss ``name`` on raw outputs for real and fake samples; a float32 scalar.

    Minimised by the discriminator. For ``wasserstein`` this is ``mean(fake) - mean(real)``.
    """
    check_loss_name(name)
    return _LOSSES[name].discriminator(real_logits.float(), fake_logits.float())


def generator_loss(name: LossName, fake_logits: Tensor) -> Tensor:
    """Generator loss ``name`` on the discriminator's raw outputs for fake samples; a float32 scalar."""
    check_loss_name(name)
    return _LOSSES[name].generator(fake_logits.float())


def _grad_norm_sq(outputs: Tensor, inputs: Tensor) -> Tensor:
    """Per-sample squared norm (B,), in float32, of d sum(outputs) / d inputs, kept differentiable."""
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)  # like inputs: (B, ...)
    return grad.float().flatten(1).square().sum(dim=1)  # (B,)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    alpha: Tensor | None = None,
) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028).

    ``mean_b (||grad_x critic(x_hat_b)||_2 - 1)^2`` at ``x_hat = alpha * real + (1 - alpha) * fake``,
    ``alpha ~ U(0, 1)`` per sample (or the given ``alpha`` of shape (B,)). ``real`` and ``fake`` are
    (B, C, H, W) images or (B, D) vectors; both are detached here, so the penalty only trains the
    critic. The gradient is taken with ``create_graph=True``, so the result can be backpropagated
    into the critic's parameters. The caller multiplies by lambda (10 in the paper). Wrap label
    conditioning into ``critic`` (e.g. ``lambda x: D(x, y)``). Use a critic without BatchNorm: it
    couples the samples of a batch, which breaks the per-sample penalty. The norm is computed in
    float32 with a 1e-12 floor under the square root, so a zero gradient gives no NaN.
    """
    real, fake = real.detach(), fake.detach()
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs real and fake of one shape, got {real.shape} and {fake.shape}")
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)  # (B,)
    alpha = alpha.to(real).reshape(-1, *([1] * (real.dim() - 1)))  # (B, 1, ...)
    x_hat = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)  # (B, ...)
    norm = (_grad_norm_sq(critic(x_hat), x_hat) + 1e-12).sqrt()  # (B,)
    return (norm - 1.0).square().mean()


def r1_penalty(critic_or_real_logits: Callable[[Tensor], Tensor] | Tensor, real: Tensor) -> Tensor:
    """R1 penalty (Mescheder et al. 2018, https://arxiv.org/abs/1801.04406): ``mean_b ||grad_x D(x_b)||^2``
    on real data, as a float32 scalar; the caller multiplies by ``gamma / 2``.

    Two ways to call it:

    * ``r1_penalty(real_logits, real)``, the cheap one inside a discriminator step: set
      ``real.requires_grad_(True)`` *before* the forward that gives ``real_logits`` and reuse those
      logits for the loss, so no second forward is needed. The gradient graph is kept
      (``create_graph=True``), so ``loss + gamma / 2 * r1`` backpropagates through both.
    * ``r1_penalty(critic, real)``: runs ``critic`` on a detached copy of ``real`` that requires grad.

    Under fp16 with a GradScaler the inner gradient is not scaled; bf16 needs no scaler.
    """
    if isinstance(critic_or_real_logits, Tensor):
        if not real.requires_grad or critic_or_real_logits.grad_fn is None:
            raise ValueError(
                "r1_penalty(real_logits, real) needs real.requires_grad_(True) before the discriminator "
                "forward that produced real_logits; or pass the critic itself: r1_penalty(critic, real)"
            )
        return _grad_norm_sq(critic_or_real_logits, real).mean()
    real = real.detach().requires_grad_(True)  # (B, ...)
    return _grad_norm_sq(critic_or_real_logits(real), real).mean()


def path_length_penalty(
    synthesis: Callable[[Tensor], Tensor], ws: Tensor, mean_length: Tensor
) -> tuple[Tensor, Tensor]:
    """StyleGAN2's path length regularizer (Karras et al. 2020, https://arxiv.org/abs/1912.04958, sec. 3.2).

    For images ``synthesis(ws)`` (B, C, H, W) and ``y ~ N(0, I) / sqrt(H W)``, the per-sample length
    ``a_b = sqrt(mean_i ||d (g(ws) . y) / d ws_i||^2)`` over the (B, num_ws, w_dim) styles should stay near
    its running mean: returns ``(mean_b (a_b - mean_length)^2, a (B,))``, float32. The caller multiplies by
    the weight (2 in the paper, times the lazy interval) and moves ``mean_length`` towards ``a.mean()``
    (decay 0.01). ``ws`` must be part of the graph (not detached) for the penalty to train the mapping too.
    """
    images = synthesis(ws)  # (B, C, H, W)
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])  # (B, C, H, W)
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)  # (B, num_ws, w_dim)
    lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()  # (B,)
    return (lengths - mean_length).square().mean(), lengths
