"""Normalizing-flow family: the exact likelihood of 8-bit images, and sampling with a temperature.

A bijective net (RealNVP, Dinh et al. 2017, https://arxiv.org/abs/1605.08803; Glow, Kingma & Dhariwal 2018,
https://arxiv.org/abs/1807.03039; :mod:`genlit.nets.flows`) maps data to Gaussian noise, so log p(x) is the
noise's log density plus the log-determinant. The data are 8-bit: each batch in model space [-1, 1] becomes its
levels k in {0..255}, uniformly dequantized to y = (k + u) / 256 in [0, 1) (u ~ U[0, 1), fresh every training
step, seeded per batch in validation and test), then preprocessed with its log-determinant: RealNVP's logit
transform ``logit(alpha + (1 - 2 alpha) y)`` or Glow's ``y - 1/2``. Every change of variables is counted, so

    nll = -log p_y(y) + D log 256   (nats per example),   bits/dim = nll / (D ln 2)

is the discrete 8-bit bound of :mod:`genlit.objectives.dequantization` (Theis et al. 2016): ``train/``, ``val/``
and ``test/`` report it (``nll`` in nats, ``bits_per_dim``; ``genlit test``: ``test/nll`` and
``test/nll_bits_per_dim``, with ``nll_samples`` dequantizations per image). Training minimizes the bits/dim.
Likelihoods are computed in float32 whatever the trainer's precision: a log-determinant summed over hundreds of
layers' dimensions does not survive bf16.

Samples: eps ~ N(0, temperature^2 I) per sample from its own stream, through the inverse net and
preprocessing; temperature 0 gives the mean path (every prior at its mean), Glow's samples use 0.7.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from genlit.families.anomaly import AnomalyScoring
from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy, ShapeNetFactory
from genlit.objectives.dequantization import (
    dequantized_nll,
    from_dequantized,
    inverse_logit_transform,
    logit_transform,
    to_levels,
    uniform_dequantize,
)
from genlit.objectives.elbo import bits_per_dim
from genlit.seeding import SampleRNG

Preprocessing = Literal["logit", "center"]


class Flow(AnomalyScoring, GenerativeFamily):
    """A normalizing flow with the bijective net passed in, trained by maximum likelihood on 8-bit images.

    Args:
        net: factory called as ``net(data_shape, 0)`` (e.g. :class:`~genlit.nets.flows.MultiScaleFlow`);
            ``net(v)`` returns ``(eps (B, D), logdet (B,))``, ``net.log_prob(v)`` log p(v) (B,) and
            ``net.inverse(eps)`` v, for v (B, *data_shape).
        data_shape / num_classes: linked from the DataModule by the CLI.
        conditional: must be false (the flow is unconditional).
        preprocessing: ``logit`` (RealNVP: ``logit(alpha + (1 - 2 alpha) y)``) or ``center`` (Glow: ``y - 1/2``),
            of the dequantized data y in [0, 1); either's log-determinant is part of the likelihood.
        logit_alpha: alpha of the logit transform, in (0, 0.5) (RealNVP: 0.05).
        nll_samples: dequantizations per image of ``test/nll`` (and :meth:`nll`): k > 1 gives the
            importance-weighted bound, a little tighter; training and validation use one.
        anomaly_background: checkpoint of a background Flow for the likelihood-ratio anomaly score
            (:mod:`genlit.families.anomaly`); usually given at test time.
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("bits_per_dim",)
    metric_panels = {
        "bits/dim (discrete 8-bit bound)": ("bits_per_dim",),
        "NLL (nats per image)": ("nll",),
        **SAMPLE_QUALITY_PANELS,
    }

    def __init__(
        self,
        net: ShapeNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        preprocessing: Preprocessing = "logit",
        logit_alpha: float = 0.05,
        nll_samples: int = 1,
        anomaly_background: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        _check_options(conditional, preprocessing, logit_alpha, nll_samples)
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.data_shape = tuple(data_shape)
        self.net = net(self.data_shape, 0)
        self.num_dims = math.prod(self.data_shape)
        self.init_anomaly_scoring()

    # ----------------------------------------------------------------------------- the change of variables
    def preprocess(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The net's input v (B, *data_shape) from dequantized data y in [0, 1), and log|dv/dy| (B,)."""
        if self.hparams.preprocessing == "logit":
            return logit_transform(y, self.hparams.logit_alpha)
        return y - 0.5, y.new_zeros(y.shape[0])

    def postprocess(self, v: Tensor) -> Tensor:
        """Dequantized-scale data y (B, *data_shape) of the net's input space v: the inverse of :meth:`preprocess`."""
        if self.hparams.preprocessing == "logit":
            return inverse_logit_transform(v, self.hparams.logit_alpha)
        return v + 0.5

    def log_density(self, y: Tensor) -> Tensor:
        """log p_y(y) in nats (B,) of dequantized data y (B, *data_shape) in [0, 1): the net's log p of the
        preprocessed data plus the preprocessing's log-determinant; in float32 under any autocast."""
        with torch.autocast(y.device.type, enabled=False):
            v, logdet = self.preprocess(y.float())
            return self.net.log_prob(v) + logdet

    def nll(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int | None = None,
        batch_idx: int | None = None,
    ) -> Tensor:
        """The discrete NLL bound in nats per image (B,) of 8-bit model-space data x (B, *data_shape):
        ``-log p_y(y) + D log 256`` over ``samples`` uniform dequantizations y (default ``nll_samples``; more
        than one: the importance-weighted bound). ``generator`` (on x's device) draws the dequantization; without
        one, ``batch_idx`` seeds it as test batch ``batch_idx`` (the same draw every time), else it is fresh."""
        if generator is None and batch_idx is not None:
            generator = self._seeded(x, batch_idx)
        levels = to_levels(x)  # (B, *data_shape)
        k = self.hparams.nll_samples if samples is None else samples
        log_p = torch.stack([self.log_density(uniform_dequantize(levels, generator)) for _ in range(k)])  # (k, B)
        return dequantized_nll(log_p, self.num_dims)

    def bits_per_dim(self, nll: Tensor) -> Tensor:
        """Bits per dimension of discrete NLLs in nats (as :meth:`nll` returns)."""
        return bits_per_dim(nll, self.num_dims)

    # ------------------------------------------------------------------------------------------ sampling
    def draw(self, num: int, labels: Tensor | None, rng: SampleRNG, *, temperature: float = 1.0) -> Tensor:
        """``num`` samples (num, *data_shape) in [-1, 1]: eps ~ N(0, temperature^2 I) from each sample's stream,
        mapped back through the net and the preprocessing (then the 8-bit level whose bin holds the value).

        Args:
            temperature: scale of the noise (>= 0); below 1 trades diversity for cleaner samples (Glow: 0.7),
                0 gives the mean path.
        """
        eps = rng.randn(self.num_dims) * temperature  # (num, D)
        with torch.autocast(eps.device.type, enabled=False):
            y = self.postprocess(self.net.inverse(eps))  # (num, *data_shape)
        return from_dequantized(y)

    def validate_sample_options(self, temperature: float = 1.0) -> None:
        """The temperature is a finite number >= 0."""
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")

    # --------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Minimize the mean bits/dim of the batch under fresh dequantization noise."""
        x, _ = batch
        nll = self.nll(x, samples=1)  # (B,)
        loss = self.bits_per_dim(nll).mean()
        if not self.loss_is_finite(loss):
            return None
        self.log_train_step(bits_per_dim=loss, nll=nll.mean())
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/nll`` and ``val/bits_per_dim`` with one dequantization seeded by the batch index (comparable
        across epochs)."""
        x, _ = batch
        nll = self.nll(x, generator=self._seeded(x, batch_idx), samples=1)
        values = {"val/nll": nll.mean(), "val/bits_per_dim": self.bits_per_dim(nll).mean()}
        self.log_dict(values, sync_dist=True, batch_size=len(x))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/nll`` (nats per image) and ``test/nll_bits_per_dim`` with ``nll_samples`` seeded
        dequantizations per image, and the anomaly AUROCs when the DataModule holds classes out."""
        x, y = batch
        nll = self.nll(x, batch_idx=batch_idx)
        values = {"test/nll": nll.mean(), "test/nll_bits_per_dim": self.bits_per_dim(nll).mean()}
        self.log_dict(values, sync_dist=True, batch_size=len(x))
        self.log_anomaly_aurocs(x, y, nll, batch_idx)

    @staticmethod
    def _seeded(x: Tensor, batch_idx: int) -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(10_007 * batch_idx + 17)


def _check_options(conditional: bool, preprocessing: str, logit_alpha: float, nll_samples: int) -> None:
    if conditional:
        raise ValueError("Flow is unconditional; use conditional: false")
    if preprocessing not in get_args(Preprocessing):
        raise ValueError(f"unknown preprocessing {preprocessing!r}; use one of {', '.join(get_args(Preprocessing))}")
    if not 0 < logit_alpha < 0.5:
        raise ValueError(f"logit_alpha must lie in (0, 0.5), got {logit_alpha}")
    if nll_samples < 1:
        raise ValueError(f"nll_samples must be >= 1, got {nll_samples}")
