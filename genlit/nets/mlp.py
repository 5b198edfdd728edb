"""MLP generator and discriminator for flat toy data (mixtures of Gaussians, rings, grids).

Defaults follow the toy experiments of Unrolled GAN (Metz et al. 2017,
https://arxiv.org/abs/1611.02163, appendix A: a 256-dimensional Gaussian noise, a generator with
two ReLU hidden layers of 128 units and a linear output), which VEEGAN
(https://arxiv.org/abs/1705.07761) and PacGAN (https://arxiv.org/abs/1712.04086) reuse with
small changes. ``depth`` counts the linear layers, so ``depth=3`` is two hidden layers plus the
output layer. The generator's output is linear (toy data are not bounded to [-1, 1]).

The nets are for flat data only: a ``data_shape`` with more than one dimension is an error
(use :mod:`genlit.nets.dcgan` for images). PyTorch's default initialisation is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlit.nets.dcgan import ProjectionHead, apply_spectral_norm, check_labels


def _flat_dim(data_shape: tuple[int, ...], owner: str) -> int:
    shape = tuple(data_shape)
    if len(shape) != 1:
        raise ValueError(f"{owner} needs a flat data_shape (D,), got {shape}; use the DCGAN nets for images")
    return shape[0]


def _check_depth(depth: int, owner: str) -> None:
    if depth < 2:
        raise ValueError(f"{owner} depth {depth} is too small; use depth >= 2 (hidden layers + output layer)")


class MLPGenerator(nn.Module):
    """MLP generator: ``z`` (B, latent_dim) -> samples (B, D).

    ``depth - 1`` hidden layers of ``hidden`` units with ReLU, then a linear output layer.
    With ``num_classes > 0`` a learned class embedding of size ``hidden`` is concatenated to
    ``z`` (as in the conditional GAN of Mirza & Osindero 2014, https://arxiv.org/abs/1411.1784)
    and ``forward`` requires labels ``y``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 256,
        hidden: int = 128,
        depth: int = 3,
    ):
        super().__init__()
        out_dim = _flat_dim(data_shape, "MLPGenerator")
        _check_depth(depth, "MLPGenerator")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        in_dim = latent_dim + (hidden if num_classes > 0 else 0)
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.ReLU()]
        layers.append(nn.Linear(hidden, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Generate samples (B, D) from noise ``z`` (B, latent_dim) and labels ``y`` (B,)."""
        check_labels("MLPGenerator", self.num_classes, y, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)  # (B, latent_dim + hidden)
        return self.net(z)  # (B, D)


class MLPDiscriminator(nn.Module):
    """MLP discriminator / critic: samples (B, D) -> raw logits or critic values (B,).

    ``depth - 1`` hidden layers of ``hidden`` units with LeakyReLU(0.2) and no normalisation
    (so it is safe with the WGAN-GP gradient penalty), then a :class:`ProjectionHead`: a linear
    output, plus the class projection ``sum(embed(y) * h)`` when ``num_classes > 0``
    (Miyato & Koyama 2018, https://arxiv.org/abs/1802.05637). ``spectral_norm=True`` wraps every
    linear and embedding weight with spectral normalisation (Miyato et al. 2018).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        hidden: int = 128,
        depth: int = 3,
        spectral_norm: bool = False,
    ):
        super().__init__()
        in_dim = _flat_dim(data_shape, "MLPDiscriminator")
        _check_depth(depth, "MLPDiscriminator")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = ProjectionHead(hidden, num_classes)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Score samples ``x`` (B, D) with labels ``y`` (B,); returns raw logits (B,)."""
        check_labels("MLPDiscriminator", self.num_classes, y, x.shape[0])
        return self.head(self.features(x), y)  # (B,)
