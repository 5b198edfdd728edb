"""Losses of a discriminator's auxiliary head that predicts what the generator was given, as plain functions.

* ACGAN (Odena et al. 2017, https://arxiv.org/abs/1610.09585, eq. 2-3): the head classifies real and generated
  images; its loss is the cross-entropy ``-E log P(C = c | X)`` of the true class of a real image or the class G
  was asked for (:func:`class_loss`).
* InfoGAN (Chen et al. 2016, https://arxiv.org/abs/1606.03657, sec. 5): the head is Q(c | x), a variational
  posterior over G's latent codes c. The mutual information I(c; G(z, c)) is bounded below by
  ``L_I = H(c) + E_{c ~ P(c), x ~ G(z, c)} log Q(c | x)`` (eq. 4); maximising ``L_I`` over G and Q is minimising
  :func:`information_loss`, the negative log-likelihood of the codes under Q: a cross-entropy for a categorical
  code, a Gaussian negative log-likelihood for continuous codes (Q a factored Gaussian, sec. 5 and 7).

Every loss is a mean over the batch, computed in float32 (safe under bf16 autocast).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class LatentCodes(NamedTuple):
    """InfoGAN's latent codes of a batch: ``category`` (B,) integers in [0, K) and ``continuous`` (B, N) values."""

    category: Tensor
    continuous: Tensor


class CodeLayout(NamedTuple):
    """How InfoGAN's codes are laid out: ``num_categories`` values of the categorical code, ``num_continuous``
    continuous codes, and whether Q predicts a log-std per continuous code (``learn_std``) or takes std 1."""

    num_categories: int
    num_continuous: int
    learn_std: bool = False

    @property
    def input_dim(self) -> int:
        """What the codes add to G's input: the categorical code one-hot, then the continuous codes."""
        return self.num_categories + self.num_continuous

    @property
    def q_outputs(self) -> int:
        """Q's outputs: category logits, the continuous codes' means, and their log-stds when learned."""
        return self.num_categories + self.num_continuous * (2 if self.learn_std else 1)


def class_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """ACGAN's auxiliary classifier loss ``-E log P(C = labels | X)``: cross-entropy of ``logits`` (B, K) for
    ``labels`` (B,)."""
    return F.cross_entropy(logits.float(), labels)


def gaussian_nll(values: Tensor, mean: Tensor, log_std: Tensor | None = None) -> Tensor:
    """``-E log N(values; mean, std^2)`` summed over the code dimensions (B, N) and averaged over the batch; std 1
    when ``log_std`` (B, N) is None (Q's fixed std), else ``exp(log_std)``. Includes the constant
    ``log(2 pi) / 2`` per dimension, so it is the true negative log-likelihood."""
    values, mean = values.float(), mean.float()
    log_std = torch.zeros_like(mean) if log_std is None else log_std.float()
    nll = 0.5 * ((values - mean) * torch.exp(-log_std)).square() + log_std + HALF_LOG_TWO_PI  # (B, N)
    return nll.sum(dim=1).mean()


def split_q_outputs(q: Tensor, layout: CodeLayout) -> tuple[Tensor, Tensor, Tensor | None]:
    """Q's outputs (B, layout.q_outputs) as (category logits (B, K), means (B, N), log-stds (B, N) or None)."""
    if q.shape[1] != layout.q_outputs:
        raise ValueError(f"Q has {q.shape[1]} outputs; codes laid out as {layout} need {layout.q_outputs}")
    k, n = layout.num_categories, layout.num_continuous
    logits, mean = q[:, :k], q[:, k : k + n]  # (B, K), (B, N)
    return logits, mean, q[:, k + n :] if layout.learn_std else None


def information_loss(
    q: Tensor,
    codes: LatentCodes,
    layout: CodeLayout,
    categorical_weight: float = 1.0,
    continuous_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoGAN's ``-lambda L_I`` up to the constant entropy of the codes' prior: ``categorical_weight`` times the
    cross-entropy of the categorical code plus ``continuous_weight`` times the Gaussian NLL of the continuous
    codes under Q's outputs ``q`` (B, layout.q_outputs) for the ``codes`` G was given.

    Returns the loss and its parts: ``info_categorical`` (the cross-entropy), ``info_continuous`` (the NLL),
    ``code_accuracy`` (share of samples whose category Q's argmax recovers) and ``mi_categorical`` (the lower bound
    ``log K - cross-entropy`` on the categorical code's mutual information, in nats; at most ``log K``)."""
    logits, mean, log_std = split_q_outputs(q, layout)
    categorical = class_loss(logits, codes.category)
    terms = {"info_categorical": categorical}
    loss = categorical_weight * categorical
    if layout.num_continuous:
        terms["info_continuous"] = gaussian_nll(codes.continuous, mean, log_std)
        loss = loss + continuous_weight * terms["info_continuous"]
    with torch.no_grad():
        terms["code_accuracy"] = (logits.argmax(dim=1) == codes.category).float().mean()
        terms["mi_categorical"] = math.log(layout.num_categories) - categorical.detach()
    return loss, terms
