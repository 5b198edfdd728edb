"""What every denoising-diffusion formulation shares: the network and its EMA, the modelled space, classifier-free
guidance, sampling through a :class:`~genlit.diffusion.Sampler`, and the training / validation loop with the loss
by noise-level quartile. The formulations subclass it: :class:`~genlit.families.diffusion.Diffusion` (discrete
timesteps of a variance-preserving schedule, DDPM) and :class:`~genlit.families.edm.EDM` (Karras et al.'s
continuous noise levels and preconditioning). A subclass defines :meth:`losses`, :meth:`denoiser`,
:meth:`noise_quartile` and :meth:`onnx_graph`, and calls ``save_hyperparameters()`` after ``super().__init__``.

Class-conditional models drop labels to the net's null label with probability ``label_dropout`` during
training and are sampled with classifier-free guidance (Ho & Salimans 2022,
https://arxiv.org/abs/2207.12598): out = out_null + s (out_label - out_null) for guidance scale s
(s = 1: the conditional model alone; s = 0: the unconditional one).

The process runs on what :meth:`DenoisingFamily.encode_data` makes of a batch, of shape ``latent_shape``: the
data itself here. A latent diffusion model overrides ``latent_shape``, ``encode_data`` and ``decode_latents``
(an autoencoder's) and inherits everything else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genlit.diffusion.samplers import Denoiser, Sampler
from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy, ShapeNetFactory
from genlit.families.lora import UNET_TARGETS
from genlit.metrics.binned import BinnedMean
from genlit.seeding import SampleRNG

QUARTILES = 4


class DenoisingFamily(GenerativeFamily):
    """The shared base of the diffusion formulations (see the module docstring); not built directly.

    Args:
        net: factory called as ``net(latent_shape, num_classes)`` (``num_classes`` 0 unless conditional);
            ``net(x, noise_level, y)`` returns a tensor shaped like x. A conditional net has a ``null_label``.
        data_shape / num_classes: linked from the DataModule by the CLI.
        schedule: the formulation's noise levels (a discrete schedule or an EDM schedule).
        sampler: the default sampler of :meth:`sample`.
        conditional / label_dropout / guidance_scale: classifier-free guidance (see the module docstring).
        ema_decay: decay of the EMA of the net used by validation, test and sampling, warmed up from the
            start of training (:meth:`GenerativeFamily.keep_ema`); 0 disables it.
        optimizer / lr_scheduler / on_nonfinite: as every family's.
    """

    lora_targets = UNET_TARGETS
    metric_panels = {
        "loss": ("loss",),
        "loss by noise-level quartile (q1: least noise)": tuple(f"loss_q{q + 1}" for q in range(QUARTILES)),
        **SAMPLE_QUALITY_PANELS,
    }

    def __init__(
        self,
        net: ShapeNetFactory,
        data_shape: tuple[int, ...],
        num_classes: int,
        schedule,
        sampler: Sampler,
        conditional: bool,
        label_dropout: float,
        ema_decay: float,
        optimizer: Callable | None,
        lr_scheduler: Callable | None,
        on_nonfinite: NonFinitePolicy,
    ) -> None:
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a genlit.diffusion.Sampler, got {type(sampler).__name__}")
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.data_shape = tuple(data_shape)
        self.schedule, self.sampler = schedule, sampler
        self.net = self.build_net(net, num_classes if conditional else 0)
        self.null_label = getattr(self.net, "null_label", num_classes) if conditional else None
        self.keep_ema("net", ema_decay)
        self.num_dims = int(torch.tensor(self.data_shape).prod())
        self.train_quartiles, self.val_quartiles = BinnedMean(QUARTILES), BinnedMean(QUARTILES)

    def build_net(self, net: ShapeNetFactory, num_classes: int) -> torch.nn.Module:
        """The denoising network ``net(latent_shape, num_classes)``: the hook where a text-conditional family
        (:mod:`genlit.families.text_to_image`) joins its text encoder to it."""
        return net(self.latent_shape, num_classes)

    # ------------------------------------------------------------------------------- the modelled space
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one item the process runs on (the noise, the net's input): the data's shape here."""
        return self.data_shape

    def encode_data(self, x: Tensor) -> Tensor:
        """What the process models, from a data batch x (B, *data_shape): x itself here."""
        return x

    def decode_latents(self, z: Tensor) -> Tensor:
        """Data (B, *data_shape) in [-1, 1] from the sampler's output z (B, *latent_shape)."""
        return z.clamp(-1, 1)

    # ------------------------------------------------------------------------------------ the formulation
    def losses(self, x: Tensor, labels: Tensor | None, generator=None) -> tuple[Tensor, Tensor]:
        """Per-example training losses (B,) of a data batch x and the noise levels drawn for them (B,)."""
        raise NotImplementedError

    def denoiser(self, labels: Tensor | None = None, guidance_scale: float = 1.0) -> Denoiser:
        """``denoise(x, noise_level) -> (x0_hat, eps_hat)`` with the net's current weights, for the samplers."""
        raise NotImplementedError

    def noise_quartile(self, levels: Tensor) -> Tensor:
        """The quartile (B,) in [0, 4) of each training noise level (B,), 0 the least noisy."""
        raise NotImplementedError

    def guided_net(self, labels: Tensor | None, guidance_scale: float) -> Callable[[Tensor, Tensor], Tensor]:
        """``out(x, noise_level) -> net output`` (float32) for ``labels``, with classifier-free guidance when the
        scale is not 0 or 1 (the net evaluated on the labels and on the null label in one batch, outputs mixed)."""
        net = self.net
        labels = self._net_labels(labels, guidance_scale)

        def out(x: Tensor, level: Tensor) -> Tensor:
            if labels is None or guidance_scale == 1 or guidance_scale == 0:
                return net(x, level, labels).float()  # (B, ...)
            null = torch.full_like(labels, self.null_label)
            both = net(torch.cat([x, x]), torch.cat([level, level]), torch.cat([labels, null])).float()  # (2B, ...)
            cond, uncond = both.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        return out

    def _net_labels(self, labels: Tensor | None, guidance_scale: float) -> Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError("this diffusion model is unconditional; sample it without labels")
            return None
        if labels is None:
            raise ValueError("this diffusion model is conditional: pass labels (B,)")
        labels = torch.as_tensor(labels, device=self.device, dtype=torch.long)
        return torch.full_like(labels, self.null_label) if guidance_scale == 0 else labels

    # ------------------------------------------------------------------------------------ sampling
    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        sampler: Sampler | None = None,
        guidance_scale: float | None = None,
        step_progress: bool = False,
    ) -> Tensor:
        """``num`` samples (num, *data_shape) in [-1, 1], from noise drawn per sample by ``rng``.

        Args:
            sampler: the reverse-process sampler (default: the model's own, the ``sampler`` it was trained with).
            guidance_scale: classifier-free guidance scale of a conditional model (default: the model's own;
                1: the conditional model alone, 0: the unconditional one).
            step_progress: show a bar over the denoising steps.
        """
        sampler = sampler or self.sampler
        scale = self.hparams.guidance_scale if guidance_scale is None else guidance_scale
        noise = rng.randn(*self.latent_shape)  # (num, *latent_shape)
        with tqdm(total=len(sampler.timesteps(self.schedule)), desc="denoising", unit="step", leave=False,
                  disable=not step_progress) as bar:  # fmt: skip
            z = sampler.sample(self.denoiser(labels, scale), noise, self.schedule, rng, lambda _: bar.update())
        return self.decode_latents(z)

    def validate_sample_options(self, sampler=None, guidance_scale=None, step_progress=False) -> None:
        """Guidance needs a conditional model; the sampler must be a :class:`~genlit.diffusion.Sampler` that runs
        on this model's schedule."""
        if guidance_scale is not None and not self.conditional:
            raise ValueError("guidance_scale needs a class-conditional diffusion model; this one is unconditional")
        if sampler is not None:
            if not isinstance(sampler, Sampler):
                raise ValueError(f"sampler must be a genlit.diffusion.Sampler, got {type(sampler).__name__}")
            sampler.timesteps(self.schedule)

    # ------------------------------------------------------------------------------------ steps
    def _training_labels(self, y: Tensor) -> Tensor | None:
        """Labels with a ``label_dropout`` share replaced by the null label (conditional models)."""
        if not self.conditional:
            return None
        drop = torch.rand(y.shape, device=y.device) < self.hparams.label_dropout  # (B,)
        return torch.where(drop, torch.full_like(y, self.null_label), y)

    def _update_quartiles(self, stage: str, loss: Tensor, levels: Tensor) -> None:
        getattr(self, f"{stage}_quartiles").update(loss, self.noise_quartile(levels))

    def _log_quartiles(self, stage: str) -> None:
        """Log the epoch's mean loss per noise-level quartile (synchronised across ranks by torchmetrics)."""
        metric = getattr(self, f"{stage}_quartiles")
        if metric.update_called:
            for q, mean in enumerate(metric.compute()):
                self.log(f"{stage}/loss_q{q + 1}", mean)
        metric.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The formulation's loss at drawn noise levels; labels dropped to the null label at ``label_dropout``."""
        x, y = batch
        loss, levels = self.losses(x, self._training_labels(y))
        mean = loss.mean()
        if not self.loss_is_finite(mean):
            return None
        self.log_train_step(loss=mean)
        self._update_quartiles("train", loss, levels)
        return mean

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training loss, overall and by noise-level quartile."""
        super().on_train_epoch_end()
        self._log_quartiles("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation loss by noise-level quartile."""
        self._log_quartiles("val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The loss of the EMA net, with noise levels and noise seeded by the batch index (comparable across
        epochs)."""
        x, y = batch
        with self.ema_weights():
            loss, levels = self.losses(x, self._eval_labels(y), self._seeded(x, batch_idx))
        self.log("val/loss", loss.mean(), sync_dist=True, batch_size=len(x))
        self._update_quartiles("val", loss, levels)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/loss`` of the EMA net, seeded by the batch index."""
        x, y = batch
        with self.ema_weights():
            loss, _ = self.losses(x, self._eval_labels(y), self._seeded(x, batch_idx))
        self.log("test/loss", loss.mean(), sync_dist=True, batch_size=len(x))

    def _eval_labels(self, y: Tensor) -> Tensor | None:
        return y if self.conditional else None

    @staticmethod
    def _seeded(x: Tensor, batch_idx: int) -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(10_007 * batch_idx + 17)
