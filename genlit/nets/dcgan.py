"""DCGAN generator and discriminator (Radford et al. 2016, https://arxiv.org/abs/1511.06434).

Both nets take ``data_shape = (C, H, W)`` with ``H == W`` in {28, 32, 64} and ``C`` in {1, 3}:

========  =====================  ==========================================
size      generator              discriminator (mirror image)
========  =====================  ==========================================
28        7x7 -> 14 -> 28        28 -> 14 -> 7   (2 strided convs)
32        4x4 -> 8 -> 16 -> 32   32 -> 16 -> 8 -> 4
64        4x4 -> 8 -> ... -> 64  64 -> 32 -> ... -> 4
========  =====================  ==========================================

Class conditioning (``num_classes > 0``):

* the generator uses conditional BatchNorm: a BatchNorm without its own affine parameters
  followed by a per-class gain and bias looked up in an embedding (Miyato & Koyama 2018,
  https://arxiv.org/abs/1802.05637; de Vries et al. 2017; BigGAN, https://arxiv.org/abs/1809.11096);
* the discriminator is a projection discriminator (Miyato & Koyama 2018):
  ``out = linear(h) + sum(embed(y) * h, dim=1)`` on the flattened last feature map ``h``.

Unconditional nets accept and ignore ``y`` so a family may always pass the batch labels.

Auxiliary heads (``aux_outputs > 0``): the discriminator also predicts something about its input from the same
features, beside its adversarial output (:class:`AuxiliaryHead`, read with :meth:`DCGANDiscriminator.heads`):
ACGAN's class logits (Odena et al. 2017, https://arxiv.org/abs/1610.09585) or InfoGAN's Q network, which shares
all of D's convolutions (Chen et al. 2016, https://arxiv.org/abs/1606.03657, appendix C).

The small helpers :class:`ProjectionHead`, :func:`apply_spectral_norm`, :func:`dcgan_init_` and
:func:`check_labels` live here and are reused by :mod:`genlit.nets.mlp`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

SUPPORTED_SIZES = (28, 32, 64)
SUPPORTED_CHANNELS = (1, 3)
DNorm = Literal["batch", "layer", "none"]
_D_NORMS = ("batch", "layer", "none")

# Channel multipliers (times ``width``) of the generator's feature maps, from the first map
# (7x7 for 28 px, 4x4 otherwise) up to the last one before the output layer. The discriminator
# uses the same list reversed.
_MULTS = {28: (2, 1), 32: (4, 2, 1), 64: (8, 4, 2, 1)}
_START = {28: 7, 32: 4, 64: 4}


def check_image_shape(data_shape: tuple[int, ...], owner: str) -> tuple[int, int]:
    """Return ``(channels, size)`` of a supported ``(C, H, W)`` image shape or raise one clear ValueError."""
    shape = tuple(data_shape)
    if len(shape) != 3:
        raise ValueError(f"{owner} needs an image data_shape (C, H, W), got {shape}")
    c, h, w = shape
    if h != w or h not in SUPPORTED_SIZES:
        sizes = ", ".join(map(str, SUPPORTED_SIZES))
        raise ValueError(f"image size {h}x{w} is not supported by {owner}; use square images of {sizes}")
    if c not in SUPPORTED_CHANNELS:
        raise ValueError(f"{c} image channels are not supported by {owner}; use 1 or 3")
    return c, h


def check_labels(owner: str, num_classes: int, y: Tensor | None, batch: int) -> None:
    """Raise a clear error when a class-conditional net gets no labels or labels of the wrong shape.

    Label values must lie in ``[0, num_classes)``; they are not checked here because that would
    force a device synchronisation on every forward.
    """
    if num_classes <= 0:
        return
    if y is None:
        raise ValueError(f"{owner} is class-conditional (num_classes={num_classes}); pass labels y of shape (B,)")
    if y.shape != (batch,):
        raise ValueError(f"{owner} expects labels y of shape ({batch},), got {tuple(y.shape)}")


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN weight init, for ``net.apply``: conv/linear/embedding weights ~ N(0, 0.02), biases 0,
    normalisation gains ~ N(1, 0.02) (Radford et al. 2016, section 4).

    ``apply`` visits children before parents, so :class:`ConditionalBatchNorm2d` re-initialises
    its class embedding to gains ~ N(1, 0.02) and biases 0 after the generic embedding rule ran.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, ConditionalBatchNorm2d):
        module.reset_affine()


def apply_spectral_norm(net: nn.Module) -> nn.Module:
    """Wrap every conv, linear and embedding weight of ``net`` with spectral normalisation
    (Miyato et al. 2018, https://arxiv.org/abs/1802.05957), in place; returns ``net``."""
    targets = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)
    for module in list(net.modules()):  # list first: registering parametrizations adds modules
        if isinstance(module, targets):
            spectral_norm(module)
    return net


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose gain and bias are looked up per class (Miyato & Koyama 2018, BigGAN)."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.embed = nn.Embedding(num_classes, 2 * num_features)  # [gain | bias] per class
        self.reset_affine()

    def reset_affine(self) -> None:
        """Gains ~ N(1, 0.02) and biases 0, as for DCGAN's BatchNorm gains."""
        with torch.no_grad():
            nn.init.normal_(self.embed.weight[:, : self.num_features], 1.0, 0.02)
            nn.init.zeros_(self.embed.weight[:, self.num_features :])

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Normalise ``x`` (B, C, H, W) and apply the gain and bias of class ``y`` (B,)."""
        gain, bias = self.embed(y).chunk(2, dim=1)  # (B, C) each
        return self.bn(x) * gain[:, :, None, None] + bias[:, :, None, None]  # (B, C, H, W)


class ProjectionHead(nn.Module):
    """Output layer of a (projection) discriminator (Miyato & Koyama 2018,
    https://arxiv.org/abs/1802.05637): ``linear(h) + sum(embed(y) * h, dim=1)``; the projection
    term is left out when ``num_classes == 0``."""

    def __init__(self, in_features: int, num_classes: int = 0):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        self.embed = nn.Embedding(num_classes, in_features) if num_classes > 0 else None
        if self.embed is not None:  # nn.Embedding's N(0, 1) default would swamp linear(h) at init
            nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Map features ``h`` (B, F) and labels ``y`` (B,) to logits (B,)."""
        out = self.linear(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)  # (B,)
        return out


class AuxiliaryHead(nn.Module):
    """An auxiliary output of a discriminator: ``features`` (B, F) -> (B, out_features).

    ``hidden == 0``: one linear layer (ACGAN's class logits beside the adversarial output). ``hidden > 0``: a hidden
    layer of that many units with normalisation and LeakyReLU(0.2) first (InfoGAN's Q on MNIST: FC 128, batch norm,
    LeakyReLU, then the code parameters; Chen et al. 2016, appendix C). ``norm`` as the discriminator's: batch,
    layer or none.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 0, norm: DNorm = "batch"):
        super().__init__()
        if out_features < 1 or hidden < 0:
            raise ValueError(f"an auxiliary head needs out_features >= 1 and hidden >= 0, got {out_features}, {hidden}")
        layers: list[nn.Module] = []
        if hidden > 0:
            hidden_norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(norm, lambda _: nn.Identity())
            layers += [nn.Linear(in_features, hidden, bias=norm == "none"), hidden_norm(hidden), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(hidden or in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """The head's outputs (B, out_features) from flattened discriminator features (B, F)."""
        return self.net(features)  # (B, out_features)


def _d_norm(norm: DNorm, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W), per sample
    return nn.Identity()


class DCGANGenerator(nn.Module):
    """DCGAN generator: ``z`` (B, latent_dim) -> image (B, C, H, W) in [-1, 1].

    A transposed convolution maps ``z`` to the first feature map (7x7 for 28 px, 4x4 for 32 and
    64 px); stride-2 transposed convolutions with BatchNorm and ReLU double the resolution; a last
    stride-2 transposed convolution and ``tanh`` give the image. Channels are ``width`` times
    (2, 1) for 28 px, (4, 2, 1) for 32 px and (8, 4, 2, 1) for 64 px.

    With ``num_classes > 0`` every BatchNorm is a :class:`ConditionalBatchNorm2d`, a learned class embedding of
    ``class_dim`` values joins ``z`` at the input (the conditional GAN of Mirza & Osindero 2014,
    https://arxiv.org/abs/1411.1784; 0 leaves it out), and ``forward`` requires labels ``y``. With conditional
    BatchNorm alone this 28 px generator (two normalised layers) barely follows its labels: at 1,000 generator
    steps on MNIST its samples carried the requested digit 12% of the time (chance), 95% with the embedding
    (``benchmarks/gan_equal_steps.py``, docs/families/gan.md).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        latent_dim: int = 100,
        width: int = 64,
        class_dim: int = 10,
    ):
        super().__init__()
        channels, size = check_image_shape(data_shape, "DCGANGenerator")
        if class_dim < 0:
            raise ValueError(f"class_dim must be >= 0 (0: conditional BatchNorm alone), got {class_dim}")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        chans = [m * width for m in _MULTS[size]]
        in_dim = latent_dim + (class_dim if num_classes > 0 else 0)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(in_dim, chans[0], _START[size], 1, 0, bias=False)])
        self.ups.extend(
            nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        if num_classes > 0:
            self.norms = nn.ModuleList(ConditionalBatchNorm2d(c, num_classes) for c in chans)
        else:
            self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in chans)
        self.out = nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1)
        self.apply(dcgan_init_)
        self.class_embed = nn.Embedding(num_classes, class_dim) if num_classes > 0 and class_dim > 0 else None
        if self.class_embed is not None:  # N(0, 1) like z (dcgan_init_ would shrink it to N(0, 0.02))
            nn.init.normal_(self.class_embed.weight)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Generate images (B, C, H, W) in [-1, 1] from noise ``z`` (B, latent_dim) and labels ``y`` (B,)."""
        check_labels("DCGANGenerator", self.num_classes, y, z.shape[0])
        if self.class_embed is not None:
            z = torch.cat([z, self.class_embed(y)], dim=1)  # (B, Z + class_dim)
        h = z.reshape(z.shape[0], -1, 1, 1)  # (B, Z [+ class_dim], 1, 1)
        for up, norm in zip(self.ups, self.norms, strict=True):
            h = up(h)  # (B, ch, s, s)
            h = norm(h, y) if self.num_classes > 0 else norm(h)
            h = torch.relu(h)
        return torch.tanh(self.out(h))  # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator / critic: image (B, C, H, W) -> raw logits or critic values (B,).

    Stride-2 4x4 convolutions with LeakyReLU(0.2) halve the resolution down to 7x7 (28 px) or
    4x4 (32 and 64 px); the first convolution has no normalisation, as in DCGAN. The last feature
    map is flattened to ``h`` and scored by a :class:`ProjectionHead` (a linear layer on the
    flattened map is DCGAN's final valid convolution; with ``num_classes > 0`` the class
    projection term is added). No sigmoid: the losses take logits.

    ``norm``: "batch" (DCGAN), "layer" (GroupNorm with one group, i.e. LayerNorm over (C, H, W))
    or "none". Use "layer" or "none" with the WGAN-GP gradient penalty: BatchNorm mixes the
    samples of a batch, so the critic's gradient at one sample depends on the others and the
    per-sample penalty is no longer the one the paper analyses (Gulrajani et al. 2017, sec. 4).
    ``spectral_norm=True`` wraps every conv, linear and embedding weight with spectral
    normalisation (Miyato et al. 2018, https://arxiv.org/abs/1802.05957).

    ``aux_outputs > 0`` adds an :class:`AuxiliaryHead` of that many outputs (``aux_hidden`` hidden units, 0: one
    linear layer) on the same flattened features; :meth:`heads` returns both outputs from one pass. Families with
    auxiliary heads (ACGAN, InfoGAN) set ``aux_outputs`` themselves; ``forward`` stays the adversarial output alone.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        width: int = 64,
        norm: DNorm = "batch",
        spectral_norm: bool = False,
        aux_outputs: int = 0,
        aux_hidden: int = 0,
    ):
        super().__init__()
        channels, size = check_image_shape(data_shape, "DCGANDiscriminator")
        if norm not in _D_NORMS:
            raise ValueError(f"norm {norm!r} is not supported by DCGANDiscriminator; use one of {_D_NORMS}")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        chans = [m * width for m in reversed(_MULTS[size])]
        layers: list[nn.Module] = [nn.Conv2d(channels, chans[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=norm == "none"), _d_norm(norm, b), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = ProjectionHead(chans[-1] * _START[size] ** 2, num_classes)
        self.aux_outputs = aux_outputs
        self.aux = AuxiliaryHead(chans[-1] * _START[size] ** 2, aux_outputs, aux_hidden, norm) if aux_outputs else None
        self.apply(dcgan_init_)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Score images ``x`` (B, C, H, W) with labels ``y`` (B,); returns raw logits (B,)."""
        check_labels("DCGANDiscriminator", self.num_classes, y, x.shape[0])
        h = self.features(x).flatten(1)  # (B, ch * s * s)
        return self.head(h, y)  # (B,)

    def heads(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The adversarial logits (B,) and the auxiliary head's outputs (B, aux_outputs) of one pass over ``x``."""
        if self.aux is None:
            raise ValueError("this DCGANDiscriminator has no auxiliary head; build it with aux_outputs >= 1")
        check_labels("DCGANDiscriminator", self.num_classes, y, x.shape[0])
        h = self.features(x).flatten(1)  # (B, ch * s * s)
        return self.head(h, y), self.aux(h)  # (B,), (B, aux_outputs)
