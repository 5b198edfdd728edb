"""The VQ-VAE objective as plain functions on tensors (van den Oord et al. 2017, https://arxiv.org/abs/1711.00937).

With an EMA codebook (the paper's appendix A.1) the loss has two terms: the reconstruction error and the
commitment loss ``beta * mean((z_e - sg[e])^2)``, which keeps the encoder outputs close to their codes (the
codebook itself follows the encoder outputs by its moving averages, not by gradients). Reconstructions are

* ``mse``: the decoder gives means in model space [-1, 1]; the error is the mean squared error per pixel there.
* ``bce``: the decoder gives logits of pixel intensities in [0, 1]; the error is the binary cross-entropy per pixel
  (nats) against the intensities themselves (soft targets, no binarization).

:func:`squared_error` is the mean squared error in [0, 1] pixel units of either, the figure the family reports.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from genlit.objectives.elbo import from_unit_interval, to_unit_interval

Reconstruction = Literal["mse", "bce"]
RECONSTRUCTIONS: tuple[str, ...] = get_args(Reconstruction)


def check_reconstruction(name: str) -> None:
    """Raise a ValueError naming the allowed reconstruction errors when ``name`` is not one of them."""
    if name not in RECONSTRUCTIONS:
        raise ValueError(f"unknown reconstruction {name!r}; use one of {', '.join(RECONSTRUCTIONS)}")


def commitment_loss(z_e: Tensor, codes: Tensor) -> Tensor:
    """``mean((z_e - sg[codes])^2)`` over every element of the encoder outputs z_e (B, D, h, w) (a scalar; the
    gradient reaches z_e only). The family weighs it by beta (the paper: 0.25)."""
    return F.mse_loss(z_e.float(), codes.detach().float())


def reconstruction_loss(kind: Reconstruction, params: Tensor, x: Tensor) -> Tensor:
    """The mean reconstruction error per pixel (a scalar, float32) of the decoder's ``params`` (B, C, H, W) for
    model-space images x (B, C, H, W) in [-1, 1] (see the module docstring)."""
    if kind == "mse":
        return F.mse_loss(params.float(), x.float())
    return F.binary_cross_entropy_with_logits(params.float(), to_unit_interval(x.float()))


def images_of(kind: Reconstruction, params: Tensor) -> Tensor:
    """The decoder's ``params`` (B, C, H, W) as images in model space [-1, 1]: clamped means, or the sigmoid of
    logits."""
    if kind == "mse":
        return params.clamp(-1, 1)
    return from_unit_interval(torch.sigmoid(params))


def squared_error(images: Tensor, x: Tensor) -> Tensor:
    """The mean squared error per pixel in [0, 1] units (a scalar) of model-space images against x, both (B, ...)."""
    return (to_unit_interval(images.float()) - to_unit_interval(x.float())).pow(2).mean()
