"""Convolutional VAE encoder and decoder for 28, 32 and 64 px images, grey or colour.

Both nets take ``data_shape = (C, H, W)`` with ``H == W`` in {28, 32, 64} and ``C`` in {1, 3}
(:func:`~genlit.nets.dcgan.check_image_shape`), ``num_classes`` and ``latent_dim`` as their first
three parameters: the VAE family owns ``latent_dim`` and passes it to both, so they always agree.

========  ==================================  ===================================
size      encoder (4x4 stride-2 convs)        decoder (mirror image)
========  ==================================  ===================================
28        28 -> 14 -> 7,   w, 2w channels     7 -> 14 -> 28
32        32 -> 16 -> 8 -> 4,   w, 2w, 4w     4 -> 8 -> 16 -> 32
64        64 -> ... -> 4,   w, 2w, 4w, 8w     4 -> ... -> 64
========  ==================================  ===================================

The last feature map is flattened and a fully connected layer of ``hidden`` units leads to
``(mu, logvar)``; the decoder mirrors it (``z -> hidden -> feature map -> transposed convs``).
No normalisation layers: BatchNorm would couple the examples of a batch and the ``k`` samples of
the importance-weighted bound. The decoder ends with a plain transposed convolution: it returns
unnormalised parameters (Bernoulli logits or Gaussian means) that the family interprets.

Class conditioning (``num_classes > 0``, a conditional VAE, Sohn et al. 2015,
https://papers.nips.cc/paper/5775): a learned class embedding of ``hidden`` units is
concatenated to the encoder's flattened features and to the decoder's ``z``; ``forward`` then
requires labels ``y``. Unconditional nets accept and ignore ``y``.

The defaults (``width=32``, ``hidden=256``, ELU) are sized for CPU training at 28 px: about
0.85M parameters per net, and one Bernoulli ELBO training step at batch 128 with latent 32 takes
about 45 ms on 2 CPU cores.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from genlit.nets.dcgan import check_image_shape, check_labels

Activation = Literal["relu", "elu", "gelu", "silu"]
_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}

# Channel multipliers (times ``width``) of the encoder's feature maps after each stride-2 conv,
# and the side of the last map; the decoder uses the list reversed.
_MULTS = {28: (1, 2), 32: (1, 2, 4), 64: (1, 2, 4, 8)}
_LAST = {28: 7, 32: 4, 64: 4}


def make_activation(name: Activation, owner: str) -> nn.Module:
    """A fresh activation module ``name`` or one clear ValueError naming the allowed ones."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported by {owner}; use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def flatten_leading(
    owner: str, num_classes: int, z: Tensor, y: Tensor | None, latent_dim: int
) -> tuple[Tensor, Tensor | None]:
    """Check ``z`` (..., B, Z) and labels ``y`` (B,), then flatten ``z`` to (N, Z) and repeat ``y`` to (N,).

    Lets a decoder take the ``k`` samples per example of the importance-weighted bound,
    ``z`` of shape (k, B, Z), with one label per example.
    """
    if z.dim() < 2 or z.shape[-1] != latent_dim:
        raise ValueError(f"{owner} expects z of shape (B, {latent_dim}) or (k, B, {latent_dim}), got {tuple(z.shape)}")
    check_labels(owner, num_classes, y, z.shape[-2])
    if num_classes > 0 and z.dim() > 2:
        y = y.expand(*z.shape[:-1]).reshape(-1)  # (N,)
    return z.reshape(-1, latent_dim), y  # (N, Z)


class ConvEncoder(nn.Module):
    """Convolutional VAE encoder: images (B, C, H, W) in [-1, 1] -> ``(mu, logvar)``, each (B, latent_dim).

    Stride-2 4x4 convolutions with ``activation`` (see the module docstring for the sizes),
    flatten, a ``hidden``-unit fully connected layer, and a linear layer to ``2 * latent_dim``
    split into the posterior mean and log-variance. With ``num_classes > 0`` a class embedding
    is concatenated to the flattened features and ``forward`` requires labels ``y``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 32,
        width: int = 32,
        hidden: int = 256,
        activation: Activation = "elu",
    ):
        super().__init__()
        channels, size = check_image_shape(data_shape, "ConvEncoder")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        chans = [channels] + [m * width for m in _MULTS[size]]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), make_activation(activation, "ConvEncoder")]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.embed = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        flat = chans[-1] * _LAST[size] ** 2 + (hidden if num_classes > 0 else 0)
        self.head = nn.Sequential(
            nn.Linear(flat, hidden), make_activation(activation, "ConvEncoder"), nn.Linear(hidden, 2 * latent_dim)
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each (B, latent_dim), of images ``x`` (B, C, H, W)."""
        check_labels("ConvEncoder", self.num_classes, y, x.shape[0])
        h = self.features(x)  # (B, F)
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)  # (B, F + hidden)
        mu, logvar = self.head(h).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar


class ConvDecoder(nn.Module):
    """Convolutional VAE decoder: ``z`` (B, latent_dim) or (k, B, latent_dim) -> parameters (..., C, H, W).

    A ``hidden``-unit fully connected layer and a linear layer to the first feature map (7x7 for
    28 px, 4x4 otherwise), then stride-2 4x4 transposed convolutions with ``activation`` mirroring
    :class:`ConvEncoder`; the last one has no activation, so the output is unnormalised (logits or
    means). Leading sample dimensions of ``z`` are flattened and restored; labels ``y`` stay (B,).
    With ``num_classes > 0`` a class embedding is concatenated to ``z``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 32,
        width: int = 32,
        hidden: int = 256,
        activation: Activation = "elu",
    ):
        super().__init__()
        channels, size = check_image_shape(data_shape, "ConvDecoder")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        chans = [m * width for m in reversed(_MULTS[size])] + [channels]
        self.first_map = (chans[0], _LAST[size], _LAST[size])
        self.embed = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        in_dim = latent_dim + (hidden if num_classes > 0 else 0)
        self.head = nn.Sequential(
            nn.Linear(in_dim, hidden),
            make_activation(activation, "ConvDecoder"),
            nn.Linear(hidden, chans[0] * _LAST[size] ** 2),
            make_activation(activation, "ConvDecoder"),
        )
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), make_activation(activation, "ConvDecoder")]
        self.ups = nn.Sequential(*layers[:-1])  # no activation after the output layer

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder outputs (..., C, H, W) for ``z`` (..., B, latent_dim) and labels ``y`` (B,)."""
        lead = z.shape[:-1]
        h, y = flatten_leading("ConvDecoder", self.num_classes, z, y, self.latent_dim)  # (N, Z), (N,)
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)  # (N, Z + hidden)
        h = self.head(h).view(-1, *self.first_map)  # (N, ch, s, s)
        return self.ups(h).view(*lead, *self.data_shape)  # (..., C, H, W)
