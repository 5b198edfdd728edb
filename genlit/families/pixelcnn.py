"""PixelCNN family: an autoregressive image model with an exact likelihood, sampled pixel by pixel.

Gated PixelCNN (van den Oord et al. 2016, https://arxiv.org/abs/1606.05328; the net is passed in, e.g.
:class:`genlit.nets.pixelcnn.GatedPixelCNN`): ``log p(x) = sum_t log p(x_t | x_<t)`` over the sub-pixels in raster
order (colours R, G, B in order within a pixel), trained by maximum likelihood. Pixels are ``bernoulli`` (binarized
MNIST, with dynamic binarization as the VAE: :func:`~genlit.objectives.elbo.binarize_for_stage`) or ``categorical``
over the 256 8-bit levels. ``train|val|test/nll`` is the exact NLL in nats per image and ``bits_per_dim`` (test:
``test/nll_bits_per_dim``) the same in bits per sub-pixel; no bound, no discretisation offset.

Sampling draws one sub-pixel at a time, each by inverting its CDF at a uniform drawn per sample (the uniforms of
sample i come from its own stream, so samples do not depend on the batch size). ``cache`` chooses how much of each
step's net evaluation is reused, all exact: ``none`` runs the whole net on the whole image for every sub-pixel;
``rows`` runs it on the rows down to the current one only (the output at row i depends on rows <= i: about half
the work); ``stacks`` runs the vertical stack once per row on those rows and, for every pixel, only the horizontal
stack on the current row cropped to the columns up to the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from tqdm.auto import tqdm

from genlit.data.images import to_model_space
from genlit.families.anomaly import AnomalyScoring
from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy
from genlit.families.token_sampling import check_sampling_options, sample_next
from genlit.objectives.dequantization import NUM_LEVELS, to_levels
from genlit.objectives.elbo import binarize_for_stage, bits_per_dim, from_unit_interval, to_unit_interval
from genlit.objectives.pixels import PixelLikelihood, check_pixel_likelihood, pixel_nll
from genlit.seeding import SampleRNG

PixelNetFactory = Callable[[tuple[int, ...], int, int], nn.Module]
"""A net class taking ``(data_shape, num_classes, logits_per_channel)``; YAML gives its other init_args."""

SamplingCache = Literal["none", "rows", "stacks"]
SAMPLING_CACHES: tuple[str, ...] = get_args(SamplingCache)


class PixelCNN(AnomalyScoring, GenerativeFamily):
    """An autoregressive image model over discrete pixels with the net passed in.

    Args:
        net: factory called as ``net(data_shape, num_classes, logits_per_channel)`` (``num_classes`` 0 unless
            conditional); ``net(x, y)`` maps images x (B, C, H, W) in [-1, 1] to logits (B, C * K, H, W),
            colour-major, each sub-pixel's from the sub-pixels before it. ``stacks`` sampling needs the net's
            ``vertical_stack(x, y)`` and ``horizontal_stack(x, contributions)``
            (:class:`~genlit.nets.pixelcnn.GatedPixelCNN`).
        data_shape / num_classes: linked from the DataModule by the CLI.
        conditional: class-conditional model (the label goes into the net's gates); needs labels.
        likelihood: ``bernoulli`` (pixels binarized afresh every training step; validation and test data binarized
            once, with a fixed seed per batch) or ``categorical`` (256 levels per sub-pixel).
        ema_decay: decay of an EMA of the net used by validation, test, ``nll`` and sampling (Polyak averaging, as
            PixelCNN++), warmed up from the start of training; 0 (default) keeps none.
        anomaly_background: checkpoint of a background PixelCNN for the likelihood-ratio anomaly score
            (:mod:`genlit.families.anomaly`); usually given at test time.
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("bits_per_dim",)
    metric_panels = {
        "NLL (nats per image)": ("nll",),
        "bits per dim": ("bits_per_dim",),
        **SAMPLE_QUALITY_PANELS,
    }

    def __init__(
        self,
        net: PixelNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        likelihood: PixelLikelihood = "bernoulli",
        ema_decay: float = 0.0,
        anomaly_background: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        check_pixel_likelihood(likelihood)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no EMA), got {ema_decay}")
        if len(data_shape) != 3:
            raise ValueError(f"PixelCNN models images (C, H, W), got data_shape {tuple(data_shape)}")
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.data_shape = tuple(data_shape)
        self.levels = 1 if likelihood == "bernoulli" else NUM_LEVELS  # logits per sub-pixel
        self.net = net(self.data_shape, num_classes if conditional else 0, self.levels)
        self.keep_ema("net", ema_decay)
        self.num_dims = int(torch.tensor(self.data_shape).prod())
        self.init_anomaly_scoring()

    # ------------------------------------------------------------------------------------------ likelihood
    def prepare(self, x: Tensor, stage: str, batch_idx: int = 0) -> tuple[Tensor, Tensor]:
        """(the net's input in model space, the target) of a model-space batch x (B, C, H, W): binarized pixels
        in {-1, 1} and {0, 1} (Bernoulli), or x and its integer levels 0..255 (categorical)."""
        if self.hparams.likelihood == "bernoulli":
            x01 = binarize_for_stage(to_unit_interval(x), stage, batch_idx)  # (B, C, H, W) in {0, 1}
            return from_unit_interval(x01), x01
        return x, to_levels(x).long()  # (B, C, H, W), (B, C, H, W) in 0..255

    def logits(self, x_in: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits of every sub-pixel given the ones before it: (B, C, H, W) (Bernoulli) or (B, C, 256, H, W)."""
        return self._split(self.net(x_in, self._labels(labels)))

    def nll_of(self, x_in: Tensor, target: Tensor, labels: Tensor | None = None) -> Tensor:
        """The exact ``-log p(target)`` in nats per example (B,) with the net's current weights."""
        return pixel_nll(self.hparams.likelihood, self.logits(x_in, labels), target)

    def nll(self, x: Tensor, labels: Tensor | None = None, batch_idx: int = 0) -> Tensor:
        """The exact test NLL in nats per example (B,) of model-space data x (B, C, H, W) (binarized as test batch
        ``batch_idx`` under a Bernoulli likelihood), with the EMA net where there is one."""
        with self.ema_weights():
            return self.nll_of(*self.prepare(x, "test", batch_idx), labels)

    def bits_per_dim(self, nats: Tensor) -> Tensor:
        """Nats per example (B,) in bits per sub-pixel: ``nats / (D ln 2)``, D = C * H * W."""
        return bits_per_dim(nats, self.num_dims)

    def _split(self, logits: Tensor) -> Tensor:
        """The net's colour-major logits (B, C * K, H', W') as (B, C, H', W') (K = 1) or (B, C, K, H', W')."""
        b, _, h, w = logits.shape
        shaped = logits.reshape(b, self.data_shape[0], self.levels, h, w)  # (B, C, K, H', W')
        return shaped[:, :, 0] if self.levels == 1 else shaped

    def _labels(self, labels: Tensor | None) -> Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError("this PixelCNN is conditional: pass labels (B,) with the data")
        return torch.as_tensor(labels, device=self.device, dtype=torch.long)

    # ------------------------------------------------------------------------------------------ sampling
    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        cache: SamplingCache = "stacks",
        temperature: float = 1.0,
        step_progress: bool = False,
    ) -> Tensor:
        """``num`` images (num, C, H, W) in [-1, 1], drawn one sub-pixel at a time in raster order (colours in
        order within a pixel), each from one uniform of its sample's stream (inverse CDF).

        Args:
            cache: how much of each step's net evaluation is reused (all give the same samples): ``none`` (the whole
                image every step), ``rows`` (the rows down to the current one), ``stacks`` (the vertical stack once
                per row, the horizontal stack on the current row's columns up to the current one).
            temperature: divides the logits (1: the model's distribution; 0: the most likely value every time).
            step_progress: show a bar over the rows.
        """
        c, h, w = self.data_shape
        uniforms = rng.rand(c, h, w)  # (N, C, H, W): one per sub-pixel, sample i's from its own stream
        x = torch.zeros(num, c, h, w, device=self.device)  # (N, C, H, W), filled in raster order
        labels = self._labels(labels)
        with tqdm(total=h, desc="sampling rows", unit="row", leave=False, disable=not step_progress) as bar:
            for i in range(h):
                rows = x[:, :, : i + 1]  # (N, C, i+1, W): everything row i depends on
                vertical = self.net.vertical_stack(rows, labels) if cache == "stacks" else None
                for j in range(w):
                    for channel in range(c):
                        logits = self._pixel_logits(x, i, j, labels, cache, vertical)[:, channel]  # (N, K)
                        x[:, channel, i, j] = self._value(logits, uniforms[:, channel, i, j], temperature)
                bar.update()
        return x

    def _pixel_logits(self, x: Tensor, i: int, j: int, labels, cache: SamplingCache, vertical) -> Tensor:
        """The logits of pixel (i, j)'s sub-pixels, (N, C) (Bernoulli) or (N, C, K), given x's earlier values."""
        if cache == "none":
            return self._split(self.net(x, labels)[..., i : i + 1, j : j + 1])[..., 0, 0]
        if cache == "rows":
            return self._split(self.net(x[:, :, : i + 1], labels)[..., i : i + 1, j : j + 1])[..., 0, 0]
        row = x[:, :, i : i + 1, : j + 1]  # (N, C, 1, j+1)
        contributions = [v[:, :, i : i + 1, : j + 1] for v in vertical]  # (N, 2ch, 1, j+1) per layer
        return self._split(self.net.horizontal_stack(row, contributions)[..., j:])[..., 0, 0]

    def _value(self, logits: Tensor, uniform: Tensor, temperature: float) -> Tensor:
        """Model-space values (N,) of sub-pixels with logits (N,) (Bernoulli) or (N, K), at uniforms (N,)."""
        if self.levels == 1:  # P(1) = sigmoid(l) = softmax([0, l])[1]
            logits = torch.stack([torch.zeros_like(logits), logits], dim=-1)  # (N, 2)
        level = sample_next(logits, temperature, uniform=uniform)  # (N,) int64
        if self.levels == 1:
            return level.float() * 2.0 - 1.0  # (N,) in {-1, 1}
        return to_model_space(level.to(torch.uint8))  # (N,) in [-1, 1]

    def validate_sample_options(self, cache: str = "stacks", temperature: float = 1.0, step_progress=False) -> None:
        """One clear error for an unknown cache, a temperature below 0, or ``stacks`` with a net without stacks."""
        if cache not in SAMPLING_CACHES:
            raise ValueError(f"unknown cache {cache!r}; use one of {', '.join(SAMPLING_CACHES)}")
        check_sampling_options(temperature, None, None)
        if cache == "stacks" and not hasattr(self.net, "vertical_stack"):
            raise ValueError(f"cache 'stacks' needs a net with vertical_stack and horizontal_stack, "
                             f"not {type(self.net).__name__}; use cache 'rows'")  # fmt: skip

    # ------------------------------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Minimise the exact NLL (its mean in nats per sub-pixel); log it in nats per image and bits/dim."""
        x, y = batch
        nll = self.nll_of(*self.prepare(x, "train"), y if self.conditional else None)  # (B,)
        mean = nll.mean()
        if not self.loss_is_finite(mean):
            return None
        self.log_train_step(nll=mean, bits_per_dim=self.bits_per_dim(mean))
        return mean / self.num_dims

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/nll`` (nats per image) and ``val/bits_per_dim`` of the EMA net (where there is one)."""
        x, y = batch
        with self.ema_weights():
            nll = self.nll_of(*self.prepare(x, "val", batch_idx), y if self.conditional else None).mean()
        values = {"val/nll": nll, "val/bits_per_dim": self.bits_per_dim(nll)}
        self.log_dict(values, sync_dist=True, batch_size=x.shape[0])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/nll`` (exact, nats per image) and ``test/nll_bits_per_dim`` of the EMA net (where there is one), and
        the anomaly AUROCs when the DataModule holds classes out."""
        x, y = batch
        nll = self.nll(x, y if self.conditional else None, batch_idx=batch_idx)  # (B,)
        values = {"test/nll": nll.mean(), "test/nll_bits_per_dim": self.bits_per_dim(nll.mean())}
        self.log_dict(values, sync_dist=True, batch_size=x.shape[0])
        self.log_anomaly_aurocs(x, y, nll, batch_idx)
