"""MLP VAE encoder and decoder, for flat data (D,) and, by flattening, for images (C, H, W).

The classic fully connected VAE of Kingma & Welling 2014 (https://arxiv.org/abs/1312.6114,
section 5: one hidden layer of 500 units on MNIST). ``depth`` counts the linear layers, as in
:mod:`genlit.nets.mlp`: ``depth=2`` is one hidden layer plus the output layer.

* The encoder flattens its input ``x`` (B, *data_shape) to (B, prod(data_shape)) and returns
  ``(mu, logvar)``, each (B, latent_dim).
* The decoder maps ``z`` (B, latent_dim) or (k, B, latent_dim) to unnormalised parameters
  (logits or means, no final activation) reshaped to (..., *data_shape).

Class conditioning (``num_classes > 0``, a conditional VAE, Sohn et al. 2015,
https://papers.nips.cc/paper/5775): a learned class embedding of ``hidden`` units is
concatenated to the flattened input of the encoder and to ``z`` in the decoder; ``forward``
then requires labels ``y``. Unconditional nets accept and ignore ``y``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genlit.nets.conv_vae import Activation, flatten_leading, make_activation
from genlit.nets.dcgan import check_labels
from genlit.nets.mlp import _check_depth


def _mlp(in_dim: int, hidden: int, out_dim: int, depth: int, activation: Activation, owner: str) -> nn.Sequential:
    """``depth - 1`` hidden layers of ``hidden`` units with ``activation``, then a linear output layer."""
    _check_depth(depth, owner)
    layers: list[nn.Module] = []
    for i in range(depth - 1):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), make_activation(activation, owner)]
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


def _check_shape(data_shape: tuple[int, ...], owner: str) -> int:
    shape = tuple(data_shape)
    if not shape or any(int(d) < 1 for d in shape):
        raise ValueError(f"{owner} needs a data_shape of positive sizes, (D,) or (C, H, W); got {shape}")
    return math.prod(shape)


class MLPEncoder(nn.Module):
    """MLP VAE encoder: data (B, *data_shape), flattened -> ``(mu, logvar)``, each (B, latent_dim).

    ``depth - 1`` hidden layers of ``hidden`` units with ``activation`` and a linear layer to
    ``2 * latent_dim``, split into the posterior mean and log-variance.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 32,
        hidden: int = 512,
        depth: int = 2,
        activation: Activation = "elu",
    ):
        super().__init__()
        in_dim = _check_shape(data_shape, "MLPEncoder")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        in_dim += hidden if num_classes > 0 else 0
        self.net = _mlp(in_dim, hidden, 2 * latent_dim, depth, activation, "MLPEncoder")

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each (B, latent_dim), of data ``x`` (B, *data_shape)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLPEncoder expects x of shape (B, {self.data_shape}), got {tuple(x.shape)}")
        check_labels("MLPEncoder", self.num_classes, y, x.shape[0])
        h = x.flatten(1)  # (B, D)
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)  # (B, D + hidden)
        mu, logvar = self.net(h).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar


class MLPDecoder(nn.Module):
    """MLP VAE decoder: ``z`` (B, latent_dim) or (k, B, latent_dim) -> parameters (..., *data_shape).

    ``depth - 1`` hidden layers of ``hidden`` units with ``activation`` and a linear output
    (logits or means) of ``prod(data_shape)`` units, reshaped to ``data_shape``. Leading sample
    dimensions of ``z`` are flattened and restored; labels ``y`` stay (B,).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 32,
        hidden: int = 512,
        depth: int = 2,
        activation: Activation = "elu",
    ):
        super().__init__()
        out_dim = _check_shape(data_shape, "MLPDecoder")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        in_dim = latent_dim + (hidden if num_classes > 0 else 0)
        self.net = _mlp(in_dim, hidden, out_dim, depth, activation, "MLPDecoder")

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder outputs (..., *data_shape) for ``z`` (..., B, latent_dim) and labels ``y`` (B,)."""
        lead = z.shape[:-1]
        h, y = flatten_leading("MLPDecoder", self.num_classes, z, y, self.latent_dim)  # (N, Z), (N,)
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)  # (N, Z + hidden)
        return self.net(h).view(*lead, *self.data_shape)  # (..., *data_shape)
