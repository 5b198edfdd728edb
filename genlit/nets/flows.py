"""Normalizing-flow layers and the multi-scale Glow/RealNVP net: bijections with exact log-determinants.

Every layer maps a batch (B, C, H, W) to one of the same size (:class:`Squeeze` to (B, 4C, H/2, W/2)):
``forward(x)`` returns ``(y, logdet)`` with ``logdet`` (B,) = log|det dy/dx| of each example, and
``inverse(y)`` returns x. The layers are Glow's (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039):

- :class:`ActNorm`: a per-channel affine map initialized from the first training batch (zero mean, unit
  variance per channel), then trained; the initialization is a persistent buffer flag, so a resumed run or a
  loaded checkpoint never redoes it, and under DDP its statistics are those of every rank's batch together.
- :class:`InvertibleConv1x1`: a learned channel mixing, LU-decomposed (W = P L (U + diag(s))) so that its
  log-determinant is ``H W sum log|s|``, or a full matrix (``slogdet``).
- :class:`AffineCoupling`: half the channels scale and shift the other half through a small conv net whose last
  layer starts at zero; the scale is ``sigmoid(h + 2)`` (Glow's code), in (0, 1) and near 0.88 at the start.
- :class:`Squeeze`: the space-to-depth reshape of RealNVP (Dinh et al. 2017, https://arxiv.org/abs/1605.08803).
- :class:`SplitPrior` and :class:`GaussianPrior`: the learned Gaussian priors of the factored-out half (its mean
  and scale from the kept half, zero-initialized) and of the last level (learned constants), written as the
  standardizing maps z -> (z - mean) / scale, whose log-determinant is ``-sum log scale``: a standard normal
  on their output is the learned Gaussian on their input.

:class:`MultiScaleFlow` stacks them into the multi-scale architecture (squeeze, K steps, split; RealNVP
section 3.6, Glow figure 2) as one bijection from data x (B, C, H, W) to Gaussian noise eps (B, D),
D = C H W, under which ``log p(x) = log N(eps; 0, I) + logdet``. Sampling runs ``inverse`` on
``temperature * N(0, I)`` noise: the learned means at temperature 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


def squeeze(x: Tensor) -> Tensor:
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2); each 2x2 patch becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, H/2, 2, W/2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)  # (B, 4C, H/2, W/2)


def unsqueeze(x: Tensor) -> Tensor:
    """Depth to space, the inverse of :func:`squeeze`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    b, c4, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, h, w)  # (B, C, 2, 2, H, W)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)  # (B, C, 2H, 2W)


def standard_normal_log_prob(eps: Tensor) -> Tensor:
    """log N(eps; 0, I) summed over all but the first dimension: (B,)."""
    return -0.5 * (eps.square() + _LOG_2PI).flatten(1).sum(1)


class Squeeze(nn.Module):
    """:func:`squeeze` as a flow layer (a permutation: log-determinant 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> ((B, 4C, H/2, W/2), zeros (B,))."""
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """(B, 4C, H, W) -> (B, C, 2H, 2W)."""
        return unsqueeze(y)


class ActNorm(nn.Module):
    """Per-channel affine map y = (x + loc) * exp(log_scale), with data-dependent initialization (Glow 3.1).

    The first ``forward`` in training mode sets loc and log_scale so that that batch comes out with zero mean
    and unit variance per channel; the flag ``initialized`` is a persistent buffer, so the initialization is
    done once in a run's life (a checkpoint carries it; a resumed run does not redo it). Under
    ``torch.distributed`` the statistics are all-reduced, so every rank starts from the same parameters (those
    of the global batch). Eval-mode calls (Lightning's sanity check, sampling) never initialize.

    Args:
        channels: C.
        eps: added to the standard deviation at initialization.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps
        self._known_initialized = False  # a host-side copy of the flag: no device sync per step once set

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set loc = -mean and log_scale = -log(std + eps) per channel of x (B, C, H, W), over every rank."""
        flat = x.detach().double().transpose(0, 1).flatten(1)  # (C, B*H*W)
        count = torch.full((1,), float(flat.shape[1]), dtype=torch.float64, device=x.device)
        stats = torch.cat([count, flat.sum(1), flat.square().sum(1)])  # (1 + 2C,)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        n, total, squares = stats[0], stats[1 : 1 + len(flat)], stats[1 + len(flat) :]
        mean = total / n  # (C,)
        std = (squares / n - mean.square()).clamp_min(0).sqrt()  # (C,)
        self.loc.copy_(-mean.view_as(self.loc))
        self.log_scale.copy_(-torch.log(std + self.eps).view_as(self.log_scale))
        self.initialized.fill_(True)
        self._known_initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False  # read the loaded flag again on the next training forward

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (y (B, C, H, W), logdet (B,) = H W sum log_scale)."""
        if self.training and not self._known_initialized:
            if bool(self.initialized):
                self._known_initialized = True
            else:
                self.initialize(x)
        y = (x + self.loc) * self.log_scale.exp()  # (B, C, H, W)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """x = y * exp(-log_scale) - loc: (B, C, H, W)."""
        return y * (-self.log_scale).exp() - self.loc


class InvertibleConv1x1(nn.Module):
    """A learned invertible 1x1 convolution y = W x at every pixel (Glow 3.2), W (C, C) a random rotation at first.

    ``lu=True`` keeps W = P L (U + diag(sign(s) exp(log|s|))) with P a fixed permutation, L unit lower
    triangular and U strictly upper triangular: log|det| = H W sum log|s| costs O(C). ``lu=False`` trains W
    itself and takes ``slogdet`` (O(C^3), float64). The inverse inverts W in float64.

    Args:
        channels: C.
        lu: the LU-decomposed parametrization.
    """

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # (C, C) orthogonal
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)  # (C,)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def matrix(self) -> Tensor:
        """W (C, C)."""
        if not self.lu:
            return self.weight
        lower = self.lower * self.lower_mask + self.eye  # (C, C)
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())  # (C, C)
        return self.perm @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (W x (B, C, H, W), logdet (B,))."""
        w = self.matrix()  # (C, C)
        if self.lu:
            log_abs_det = self.log_s.sum()
        else:
            log_abs_det = torch.linalg.slogdet(w.double())[1].to(w.dtype)
        y = F.conv2d(x, w.view(*w.shape, 1, 1))  # (B, C, H, W)
        return y, (x.shape[2] * x.shape[3] * log_abs_det).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """W^-1 y: (B, C, H, W)."""
        w_inv = torch.linalg.inv(self.matrix().double()).to(y.dtype)  # (C, C)
        return F.conv2d(y, w_inv.view(*w_inv.shape, 1, 1))


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution (same padding) with zero weights and bias: the flow starts near the identity."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class AffineCoupling(nn.Module):
    """Affine coupling (RealNVP 3.3, Glow 3.3): x = (x_a, x_b) split by channels; x_a passes unchanged and
    y_b = (x_b + shift(x_a)) * sigmoid(raw(x_a) + 2), so log|det| = sum log sigmoid(raw + 2).

    The conditioner is conv3x3 (C_a -> hidden), ReLU, conv1x1 (hidden -> hidden), ReLU, conv3x3 (hidden ->
    2 C_b) with the last layer zero-initialized; C_a = C // 2, C_b = C - C_a. The scale lies in (0, 1): the
    layer cannot blow the data up, and the inverse divides by a scale that starts near 0.88.

    Args:
        channels: C (>= 2).
        hidden: channels of the conditioner.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"AffineCoupling needs >= 2 channels to split, got {channels}")
        self.split = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.split, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            zero_conv(hidden, 2 * (channels - self.split)),
        )

    def _shift_and_raw_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_a)  # (B, 2 C_b, H, W)
        return h[:, 0::2], h[:, 1::2] + 2.0  # (B, C_b, H, W) each

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (y (B, C, H, W), logdet (B,))."""
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        shift, raw = self._shift_and_raw_scale(x_a)
        y_b = (x_b + shift) * torch.sigmoid(raw)  # (B, C_b, H, W)
        return torch.cat([x_a, y_b], 1), F.logsigmoid(raw).flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """x_b = y_b / sigmoid(raw) - shift: (B, C, H, W)."""
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        shift, raw = self._shift_and_raw_scale(y_a)
        return torch.cat([y_a, y_b / torch.sigmoid(raw) - shift], 1)


class FlowStep(nn.Module):
    """One step of Glow: :class:`ActNorm`, :class:`InvertibleConv1x1`, :class:`AffineCoupling` (C channels)."""

    def __init__(self, channels: int, hidden: int, lu: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [ActNorm(channels), InvertibleConv1x1(channels, lu), AffineCoupling(channels, hidden)]
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (y (B, C, H, W), logdet (B,))."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, part = layer(x)
            logdet = logdet + part
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        """The layers' inverses in reverse order: (B, C, H, W)."""
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class SplitPrior(nn.Module):
    """The learned prior of the half that leaves the flow at a split (Glow's split2d): z = (z_a, z_b), z_a kept,
    z_b ~ N(mean(z_a), scale(z_a)^2) with (mean, log scale) from a zero-initialized conv3x3 of z_a.

    As a layer it standardizes the factored-out half: y = (z_a, (z_b - mean) / scale), log|det| = -sum log
    scale; the net then takes y_b, standard normal under the model, out of the flow.

    Args:
        channels: C of z (>= 2); z_a has C // 2 channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        self.conv = zero_conv(self.keep, 2 * (channels - self.keep))

    def _mean_and_log_scale(self, z_a: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv(z_a)  # (B, 2 C_b, H, W)
        return h[:, 0::2], h[:, 1::2]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> ((z_a, eps_b) (B, C, H, W), logdet (B,))."""
        z_a, z_b = z[:, : self.keep], z[:, self.keep :]
        mean, log_scale = self._mean_and_log_scale(z_a)
        eps_b = (z_b - mean) * (-log_scale).exp()  # (B, C_b, H, W)
        return torch.cat([z_a, eps_b], 1), -log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """z_b = mean + scale * eps_b: (B, C, H, W); at eps_b = 0 the prior's mean."""
        z_a, eps_b = y[:, : self.keep], y[:, self.keep :]
        mean, log_scale = self._mean_and_log_scale(z_a)
        return torch.cat([z_a, mean + log_scale.exp() * eps_b], 1)


class GaussianPrior(nn.Module):
    """The learned prior N(mean, scale^2) of the last level's z (Glow's "learntop"): a mean and a log scale per
    element, both zero at first; as a layer y = (z - mean) / scale, log|det| = -sum log scale.

    Args:
        shape: (C, H, W) of z.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(1, *shape))
        self.log_scale = nn.Parameter(torch.zeros(1, *shape))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> ((z - mean) / scale, logdet (B,))."""
        return (z - self.mean) * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(z.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """mean + scale * y: (B, C, H, W)."""
        return self.mean + self.log_scale.exp() * y


class MultiScaleFlow(nn.Module):
    """The multi-scale flow of RealNVP and Glow on images: x (B, C, H, W) <-> eps (B, C*H*W).

    At each of ``levels`` levels: :class:`Squeeze`, ``steps`` :class:`FlowStep` s, then (all but the last level)
    a :class:`SplitPrior` whose standardized half leaves the flow; the last level ends in a
    :class:`GaussianPrior`. For MNIST (1, 28, 28) with two levels: (4, 14, 14) -> steps -> 2 channels out
    (392 values) -> (8, 7, 7) -> steps -> prior (392 values). ``forward`` returns every level's standardized
    output, flattened and concatenated in that order (eps, (B, D)), and the total log-determinant (B,), so
    ``log p(x) = log N(eps; 0, I) + logdet`` (:meth:`log_prob`); :meth:`inverse` maps eps back to x.

    Args:
        data_shape: (C, H, W); H and W divisible by 2**levels (linked from the DataModule by the CLI).
        num_classes: must be 0: the flow is unconditional.
        levels: squeeze/split levels L (>= 1).
        steps: flow steps K per level (>= 1).
        hidden: channels of each coupling's conditioner.
        lu: LU-decomposed 1x1 convolutions (else full matrices with ``slogdet``).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        levels: int = 2,
        steps: int = 4,
        hidden: int = 64,
        lu: bool = True,
    ) -> None:
        super().__init__()
        _check_shape(tuple(data_shape), num_classes, levels, steps, hidden)
        c, h, w = data_shape
        self.data_shape = (c, h, w)
        self.squeeze = Squeeze()
        self.levels, self.splits = nn.ModuleList(), nn.ModuleList()
        self.latent_shapes: list[tuple[int, int, int]] = []  # what leaves the flow at each level, in order
        for level in range(levels):
            c, h, w = 4 * c, h // 2, w // 2
            self.levels.append(nn.ModuleList([FlowStep(c, hidden, lu) for _ in range(steps)]))
            if level < levels - 1:
                self.splits.append(SplitPrior(c))
                self.latent_shapes.append((c - c // 2, h, w))
                c = c // 2
        self.prior = GaussianPrior((c, h, w))
        self.latent_shapes.append((c, h, w))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> (eps (B, D), logdet (B,))."""
        logdet = x.new_zeros(x.shape[0])
        out = []
        for level, steps in enumerate(self.levels):
            x = self.squeeze(x)[0]  # (B, 4c, h/2, w/2)
            for step in steps:
                x, part = step(x)
                logdet = logdet + part
            if level < len(self.splits):
                x, part = self.splits[level](x)
                keep = self.splits[level].keep
                out.append(x[:, keep:].flatten(1))  # (B, c - keep, h, w) standardized, flattened
                x = x[:, :keep]  # (B, keep, h, w)
                logdet = logdet + part
        eps, part = self.prior(x)
        out.append(eps.flatten(1))
        return torch.cat(out, 1), logdet + part

    def inverse(self, eps: Tensor) -> Tensor:
        """eps (B, D) -> x (B, C, H, W): the last level first, each split's half put back on the way down."""
        sizes = [math.prod(shape) for shape in self.latent_shapes]
        parts = [p.reshape(len(eps), *shape) for p, shape in zip(eps.split(sizes, 1), self.latent_shapes, strict=True)]
        x = self.prior.inverse(parts[-1])  # (B, c, h, w)
        for level in reversed(range(len(self.levels))):
            if level < len(self.splits):
                x = self.splits[level].inverse(torch.cat([x, parts[level]], 1))
            for step in reversed(self.levels[level]):
                x = step.inverse(x)
            x = self.squeeze.inverse(x)  # (B, c/4, 2h, 2w)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats per example (B,) of x (B, C, H, W) (a density: x is continuous)."""
        eps, logdet = self(x)
        return standard_normal_log_prob(eps) + logdet


def _check_shape(data_shape: tuple[int, ...], num_classes: int, levels: int, steps: int, hidden: int) -> None:
    if levels < 1 or steps < 1 or hidden < 1:
        raise ValueError(f"MultiScaleFlow needs levels, steps and hidden >= 1, got {levels}, {steps} and {hidden}")
    if num_classes:
        raise ValueError("MultiScaleFlow is unconditional; use conditional: false (num_classes is then 0)")
    side = 2**levels
    if len(data_shape) != 3 or data_shape[1] % side or data_shape[2] % side:
        raise ValueError(
            f"MultiScaleFlow with {levels} levels needs images (C, H, W) with H and W divisible by {side}, "
            f"got data_shape {data_shape}; lower levels"
        )
