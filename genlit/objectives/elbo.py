"""Evidence lower bound (ELBO) and importance-weighted bound terms as plain functions on tensors.

The VAE of Kingma & Welling 2014 (https://arxiv.org/abs/1312.6114) with a diagonal Gaussian
posterior ``q(z|x) = N(mu, diag(exp(logvar)))`` and a standard normal prior ``p(z) = N(0, I)``:

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

All log densities are natural logs (nats), summed over data or latent dimensions, one value per
example. Every function computes in float32 (inputs are cast), so it is safe under bf16/fp16
autocast. Leading sample dimensions ``(k, B, ...)`` broadcast against ``(B, ...)`` data, which is
how the importance-weighted bound (:func:`iw_bound`, Burda et al. 2015) is evaluated.

Bits per dimension (:func:`bits_per_dim`) convert a negative log-likelihood in nats to
``nll / (D ln 2)``; for a *density* on data scaled from 8-bit pixels, add the
discretisation offset of :func:`uniform_dequantization_offset` first (see there).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

LikelihoodName = Literal["bernoulli", "gaussian_fixed", "gaussian_learned"]
LIKELIHOODS: tuple[str, ...] = get_args(LikelihoodName)
_LOG_2PI = math.log(2.0 * math.pi)
EIGHT_BIT_BIN_WIDTH = 2.0 / 255.0  # spacing of genlit's 8-bit levels in [-1, 1]: v / 127.5 - 1


def check_likelihood_name(name: str) -> None:
    """Raise a ValueError naming the allowed likelihoods when ``name`` is not one of them."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; use one of {', '.join(LIKELIHOODS)}")


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form ``KL(N(mu, exp(logvar)) || N(0, 1))`` per latent dimension, in nats: (B, Z).

    ``0.5 * (mu^2 + exp(logvar) - 1 - logvar)`` (Kingma & Welling 2014, appendix B).
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)  # (B, Z)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` summed over latent dimensions, in nats: (B,)."""
    return kl_per_dim(mu, logvar).sum(dim=-1)  # (B,)


def free_bits_kl(mu: Tensor, logvar: Tensor, free_bits: float) -> Tensor:
    """KL term with free bits (Kingma et al. 2016, IAF, https://arxiv.org/abs/1606.04934, eq. 15): (B,).

    The IAF paper's variant: per latent dimension ``j``, the KL averaged over the minibatch,
    ``m_j = mean_b KL_bj``, is replaced by ``max(free_bits, m_j)`` (``free_bits`` = lambda, in
    nats per dimension). Returned per example so that its batch mean is exactly
    ``sum_j max(free_bits, m_j)``: a dimension with ``m_j >= free_bits`` contributes its per-example
    ``KL_bj``, a clamped dimension contributes the constant ``free_bits`` (so it receives no
    gradient: the encoder is not pushed to shrink a KL that is already below the allowance).

    For the training objective only: report the plain :func:`gaussian_kl` in the ELBO. The
    minibatch is the local one (per device under DDP). ``free_bits <= 0`` gives the plain KL.
    """
    kl = kl_per_dim(mu, logvar)  # (B, Z)
    if free_bits <= 0:
        return kl.sum(dim=-1)  # (B,)
    active = kl.detach().mean(dim=0) >= free_bits  # (Z,)
    clamped = torch.where(active, kl, torch.full_like(kl, free_bits))  # (B, Z)
    return clamped.sum(dim=-1)  # (B,)


def reparameterize(
    mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None, k: int | None = None
) -> Tensor:
    """Draw ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` (the reparameterisation trick,
    Kingma & Welling 2014), differentiable in ``mu`` and ``logvar``; float32.

    ``k=None`` gives one sample per example, (B, Z); an integer ``k`` gives ``k`` samples per
    example, (k, B, Z) (also for ``k=1``), for the importance-weighted bound. ``generator`` must
    live on ``mu``'s device.
    """
    if k is not None and k < 1:
        raise ValueError(f"reparameterize needs k >= 1 samples, got k={k}")
    mu, logvar = mu.float(), logvar.float()
    shape = mu.shape if k is None else (k, *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (B, Z) or (k, B, Z)
    return mu + (0.5 * logvar).exp() * eps  # (B, Z) or (k, B, Z)


def _sum_data_dims(values: Tensor, data_dims: int) -> Tensor:
    """Sum ``values`` (..., B, *data) over its trailing ``data_dims`` dimensions: (..., B)."""
    return values.flatten(start_dim=values.dim() - data_dims).sum(dim=-1) if data_dims else values


def log_likelihood(name: LikelihoodName, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
    """``log p(x|z)`` in nats, summed over all data dimensions: (B,), or (k, B) for (k, B, ...) params.

    ``params`` are the decoder's raw outputs, shape (B, *data) or (k, B, *data); ``x`` is (B, *data).

    * ``bernoulli``: ``params`` are logits; ``x`` in {0, 1} (binarised pixels in [0, 1]). Computed
      as ``-binary_cross_entropy_with_logits``. For grey levels ``x`` in (0, 1) this is the
      cross-entropy, not a normalised log density (see the continuous Bernoulli, Loaiza-Ganem &
      Cunningham 2019, https://arxiv.org/abs/1907.06845), so only binary data give a likelihood.
    * ``gaussian_fixed`` / ``gaussian_learned``: ``params`` are means; ``log_scale`` (the log
      standard deviation, a tensor broadcastable to ``params``: a scalar or per pixel) is
      required. The two names share this density; they differ in whether the family trains
      ``log_scale``.
    """
    check_likelihood_name(name)
    data_dims = x.dim() - 1
    params = params.float()
    x = x.float().expand_as(params)  # (..., B, *data)
    if name == "bernoulli":
        log_p = -F.binary_cross_entropy_with_logits(params, x, reduction="none")  # (..., B, *data)
    else:
        if log_scale is None:
            raise ValueError(f"likelihood {name!r} needs log_scale (the log standard deviation); got None")
        log_scale = log_scale.float()
        log_p = -0.5 * ((x - params) * torch.exp(-log_scale)).square() - log_scale - 0.5 * _LOG_2PI
    return _sum_data_dims(log_p, data_dims)  # (..., B)


def log_normal_std(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last dimension, in nats: (...,) for ``z`` of shape (..., Z)."""
    z = z.float()
    return -0.5 * (z.square() + _LOG_2PI).sum(dim=-1)  # (...,)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last dimension, in nats.

    ``z`` (..., B, Z) broadcasts against ``mu`` and ``logvar`` (B, Z); returns (..., B).
    """
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + _LOG_2PI).sum(dim=-1)  # (..., B)


def iw_bound(log_px_given_z: Tensor, log_pz: Tensor, log_qz: Tensor) -> Tensor:
    """Importance-weighted bound (IWAE, Burda et al. 2015, https://arxiv.org/abs/1509.00519), in nats: (B,).

    ``L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x)`` with ``z_1..z_k ~ q(z|x)``, computed as
    ``logsumexp_i(log p(x|z_i) + log p(z_i) - log q(z_i|x)) - log k``. Inputs are (k, B).
    ``E[L_k] <= E[L_{k+1}] <= log p(x)``, ``L_1`` is the single-sample ELBO estimate, and
    ``L_k -> log p(x)`` as ``k`` grows. ``-L_k`` for large ``k`` (e.g. 5000 in the paper) is the
    usual test NLL estimate (an upper bound on the NLL in expectation).
    """
    log_w = log_px_given_z.float() + log_pz.float() - log_qz.float()  # (k, B)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])  # (B,)


def uniform_dequantization_offset(num_dims: int, bin_width: float = EIGHT_BIT_BIN_WIDTH) -> float:
    """Nats to add to a continuous NLL so it measures discrete 8-bit data: ``-num_dims * log(bin_width)``.

    A density ``p`` on model space assigns a pixel level the probability mass of its bin,
    ``P(v) ~= p(x) * bin_width`` per dimension, so ``-log P = -log p(x) + D * log(1 / bin_width)``.
    genlit maps 8-bit levels ``v`` in 0..255 to ``x = v / 127.5 - 1``, so neighbouring levels are
    ``2/255`` apart and the default offset is ``D * log(127.5)`` nats (equivalently: the density of
    uniformly dequantised pixels ``v + u``, ``u ~ U[0, 1)``, in 0..256 units is the model-space
    density divided by 127.5 per dimension). The bits/dim computed with it are those of papers
    that model ``[0, 256)`` pixel values; it is exact for a model trained on uniformly
    dequantised data and an approximation (piecewise-constant density over each bin) otherwise.
    Binary data under a Bernoulli likelihood need no offset.
    """
    return -num_dims * math.log(bin_width)


def bits_per_dim(nats: Tensor | float, num_dims: int, discretization_nats_per_dim: float = 0.0) -> Tensor | float:
    """Negative log-likelihood ``nats`` (per example (B,) or a scalar) in bits per data dimension.

    ``(nats / num_dims + discretization_nats_per_dim) / ln 2``. Pass
    ``discretization_nats_per_dim=uniform_dequantization_offset(1)`` (``log 127.5``) for a
    continuous likelihood on 8-bit pixels in [-1, 1]; leave 0 for a Bernoulli on binary pixels,
    where the NLL is already the code length of the data.
    """
    if num_dims < 1:
        raise ValueError(f"bits_per_dim needs num_dims >= 1, got {num_dims}")
    return (nats / num_dims + discretization_nats_per_dim) / math.log(2.0)


def binarize(x01: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dynamic binarisation: each pixel in [0, 1] becomes 1 with probability equal to its value.

    A fresh draw at every use, the MNIST protocol of Salakhutdinov & Murray 2008
    (https://doi.org/10.1145/1390156.1390266) used by Burda et al. 2015; returns {0, 1} floats
    of ``x01``'s shape and dtype. ``generator`` must live on ``x01``'s device.
    """
    return torch.bernoulli(x01, generator=generator)  # (B, ...)


def binarize_for_stage(x01: Tensor, stage: str, batch_idx: int = 0) -> Tensor:
    """:func:`binarize` as a training or evaluation step needs it: a fresh draw at every ``"train"`` step; for
    any other stage (validation, test, a likelihood query) the same draw every time, from a generator seeded by
    ``batch_idx``, so evaluation figures compare across epochs and runs. {0, 1} floats of ``x01``'s shape."""
    generator = None
    if stage != "train":
        generator = torch.Generator(device=x01.device).manual_seed(10_007 * batch_idx + 17)
    return binarize(x01, generator)  # (B, ...)


def to_unit_interval(x: Tensor) -> Tensor:
    """Map model-space data in [-1, 1] to [0, 1] (``(x + 1) / 2``, clamped), e.g. for a Bernoulli likelihood."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def from_unit_interval(x01: Tensor) -> Tensor:
    """Map [0, 1] data (e.g. binarised pixels or Bernoulli means) back to model space [-1, 1]: ``2 x - 1``."""
    return x01 * 2.0 - 1.0
