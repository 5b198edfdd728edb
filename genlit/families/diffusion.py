"""Diffusion family: DDPM training on the chosen prediction target, EMA, classifier-free guidance.

Denoising diffusion probabilistic models (Ho et al. 2020, https://arxiv.org/abs/2006.11239): a network
is trained by MSE to predict eps, x0 or v (:mod:`genlit.diffusion.targets`) from x_t = add_noise(x, eps, t)
at timesteps drawn uniformly; optional min-SNR-gamma weighting (Hang et al. 2023). The schedule and the
samplers are parameter-free objects (:mod:`genlit.diffusion`) given the network as a denoiser.

Class-conditional models drop labels to the net's null label with probability ``label_dropout`` during
training and are sampled with classifier-free guidance (Ho & Salimans 2022,
https://arxiv.org/abs/2207.12598): out = out_null + s (out_label - out_null) for guidance scale s
(s = 1: the conditional model alone; s = 0: the unconditional one).

Metrics: ``train|val|test/loss`` and the loss by timestep quartile (``loss_q1`` .. ``loss_q4``, q1 the
least noisy quarter of the timesteps), ``test/nll`` and ``test/nll_bits_per_dim``: the variational bound of
:mod:`genlit.diffusion.likelihood` (all T terms, or an unbiased stratified estimate with
``nll_timesteps`` terms). Validation, test and sampling use the EMA network.

The process runs on what :meth:`Diffusion.encode_data` makes of a batch, of shape ``latent_shape``: the data
itself here. A latent diffusion model overrides ``latent_shape``, ``encode_data`` and ``decode_latents``
(an autoencoder's) and inherits everything else.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from tqdm.auto import tqdm

from genlit.diffusion.likelihood import denoising_term, prior_term, stratified_timesteps
from genlit.diffusion.losses import training_losses
from genlit.diffusion.samplers import DDIMSampler, Denoiser, Sampler
from genlit.diffusion.schedules import LinearSchedule, NoiseSchedule
from genlit.diffusion.targets import PredictionTarget, check_target, split_prediction
from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy, ShapeNetFactory
from genlit.families.lora import UNET_TARGETS
from genlit.families.protocols import OnnxGraph, OnnxInput
from genlit.metrics.binned import BinnedMean
from genlit.objectives.elbo import bits_per_dim
from genlit.seeding import SampleRNG

QUARTILES = 4


class Diffusion(GenerativeFamily):
    """A DDPM-style diffusion model with the denoising network passed in.

    Args:
        net: factory called as ``net(data_shape, num_classes)`` (``num_classes`` 0 unless conditional);
            ``net(x_t, t, y)`` predicts the target, shaped like x_t. A conditional net has a ``null_label``
            attribute.
        data_shape / num_classes: linked from the DataModule by the CLI.
        schedule: the noise schedule (default ``LinearSchedule()``: 1000 steps, 1e-4 to 0.02).
        sampler: the default sampler of :meth:`sample` (default ``DDIMSampler(50)``).
        prediction: the regression target: ``eps``, ``x0`` or ``v``.
        min_snr_gamma: weight the per-example loss by min-SNR-gamma (5 in Hang et al.); None disables.
        conditional: class-conditional training (labels required), with ``label_dropout`` for guidance.
        label_dropout: probability of replacing a label by the null label in training.
        guidance_scale: default classifier-free guidance scale of :meth:`sample`.
        clip_x0: clamp the x_0 estimate to [-1, 1] while sampling and in the bound.
        ema_decay: decay of the EMA of the net used by validation, test and sampling, warmed up from the
            start of training (:meth:`GenerativeFamily.keep_ema`); 0 disables it.
        nll_timesteps: terms of the bound computed per test batch (stratified estimate); None: all T.
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
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
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        schedule: NoiseSchedule | None = None,
        sampler: Sampler | None = None,
        prediction: PredictionTarget = "eps",
        min_snr_gamma: float | None = None,
        conditional: bool = False,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        clip_x0: bool = True,
        ema_decay: float = 0.9999,
        nll_timesteps: int | None = 50,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        check_target(prediction)
        _check_options(min_snr_gamma, label_dropout, nll_timesteps)
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.data_shape = tuple(data_shape)
        self.schedule = schedule if schedule is not None else LinearSchedule()
        self.sampler = sampler if sampler is not None else DDIMSampler(50)
        self.net = net(self.latent_shape, num_classes if conditional else 0)
        self.null_label = getattr(self.net, "null_label", num_classes) if conditional else None
        self.keep_ema("net", ema_decay)
        self.num_dims = int(torch.tensor(self.data_shape).prod())
        self.train_quartiles, self.val_quartiles = BinnedMean(QUARTILES), BinnedMean(QUARTILES)

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

    # ------------------------------------------------------------------------------------ denoising
    def onnx_graph(self) -> OnnxGraph:
        """The denoiser: ``x_t`` (B, *latent_shape), ``t`` (B,) int64 timesteps and, when conditional, ``labels``
        (B,) (the null label ``num_classes`` included) -> ``prediction`` (B, *latent_shape) of the target. The
        sampler's loop and guidance stay outside."""
        inputs = [OnnxInput("x_t", ("batch", *self.latent_shape)), OnnxInput("t", ("batch",), torch.long,
                                                                              self.schedule.num_steps)]  # fmt: skip
        if self.conditional:
            inputs.append(OnnxInput("labels", ("batch",), torch.long, self.null_label + 1))
        names = ", ".join(i.name for i in inputs)
        description = f"the denoiser: ({names}) -> the {self.hparams.prediction} prediction"
        return OnnxGraph(self.net, tuple(inputs), "prediction", description)

    def denoiser(self, labels: Tensor | None = None, guidance_scale: float = 1.0, clip: bool | None = None) -> Denoiser:
        """``denoise(x_t, t) -> (x0_hat, eps_hat)`` with the net's current weights (within :meth:`sample`,
        :meth:`variational_bound`, validation and test: the EMA's), for samplers and the bound.

        Conditional models need ``labels`` (B,); ``guidance_scale`` != 1 evaluates the net on the labels
        and on the null label in one batch and mixes the outputs (classifier-free guidance).
        """
        net = self.net
        clip = self.hparams.clip_x0 if clip is None else clip
        labels = self._net_labels(labels, guidance_scale)

        def denoise(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            if labels is None or guidance_scale == 1 or guidance_scale == 0:
                out = net(x_t, t, labels).float()  # (B, ...)
            else:
                null = torch.full_like(labels, self.null_label)
                both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null])).float()  # (2B, ...)
                cond, uncond = both.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            return split_prediction(self.hparams.prediction, out, x_t, t, self.schedule, clip)

        return denoise

    def _net_labels(self, labels: Tensor | None, guidance_scale: float) -> Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError("this diffusion model is unconditional; sample it without labels")
            return None
        if labels is None:
            raise ValueError("this diffusion model is conditional: pass labels (B,)")
        labels = torch.as_tensor(labels, device=self.device, dtype=torch.long)
        return torch.full_like(labels, self.null_label) if guidance_scale == 0 else labels

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
        """Guidance needs a conditional model; the sampler must be a :class:`~genlit.diffusion.Sampler`."""
        if guidance_scale is not None and not self.conditional:
            raise ValueError("guidance_scale needs a class-conditional diffusion model; this one is unconditional")
        if sampler is not None and not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a genlit.diffusion.Sampler, got {type(sampler).__name__}")

    # ------------------------------------------------------------------------------------ objective
    def losses(self, x: Tensor, labels: Tensor | None, generator=None) -> tuple[Tensor, Tensor]:
        """Per-example (weighted) MSE on the target (B,) of a data batch x and the timesteps drawn (B,)."""
        z = self.encode_data(x)  # (B, *latent_shape)
        t = self.schedule.sample_timesteps(len(z), z.device, generator)  # (B,)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # (B, *latent_shape)
        hp = self.hparams
        return training_losses(self.net, z, t, self.schedule, hp.prediction, noise, labels, hp.min_snr_gamma), t

    def _training_labels(self, y: Tensor) -> Tensor | None:
        """Labels with a ``label_dropout`` share replaced by the null label (conditional models)."""
        if not self.conditional:
            return None
        drop = torch.rand(y.shape, device=y.device) < self.hparams.label_dropout  # (B,)
        return torch.where(drop, torch.full_like(y, self.null_label), y)

    def _update_quartiles(self, stage: str, loss: Tensor, t: Tensor) -> None:
        getattr(self, f"{stage}_quartiles").update(loss, t * QUARTILES // self.schedule.num_steps)

    def _log_quartiles(self, stage: str) -> None:
        """Log the epoch's mean loss per timestep quartile (synchronised across ranks by torchmetrics)."""
        metric = getattr(self, f"{stage}_quartiles")
        if metric.update_called:
            for q, mean in enumerate(metric.compute()):
                self.log(f"{stage}/loss_q{q + 1}", mean)
        metric.reset()

    def nll(self, x: Tensor, labels: Tensor | None = None, generator=None) -> Tensor:
        """The test NLL bound in nats per example (B,): :meth:`variational_bound` with the EMA net."""
        with self.ema_weights():
            return self.variational_bound(x, labels, generator)

    def variational_bound(self, x0: Tensor, labels: Tensor | None = None, generator=None) -> Tensor:
        """The bound on -log p(x0) in nats, (B,), with the net's current weights (``nll_timesteps`` stratified
        terms)."""
        denoise = self.denoiser(labels, 1.0)
        total = prior_term(self.schedule, x0)  # (B,)
        steps, weights = stratified_timesteps(self.schedule.num_steps, self.hparams.nll_timesteps, generator)
        for t, weight in zip([0, *steps], [1.0, *weights], strict=True):
            t_batch = torch.full((len(x0),), t, device=x0.device, dtype=torch.long)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = self.schedule.add_noise(x0, noise, t_batch)
            total = total + weight * denoising_term(self.schedule, x0, x_t, t, denoise(x_t, t_batch)[0])
        return total

    # ------------------------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """MSE on the target at uniform timesteps; labels dropped to the null label at ``label_dropout``."""
        x, y = batch
        loss, t = self.losses(x, self._training_labels(y))
        mean = loss.mean()
        if not self.loss_is_finite(mean):
            return None
        self.log_train_step(loss=mean)
        self._update_quartiles("train", loss, t)
        return mean

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training loss, overall and by timestep quartile."""
        super().on_train_epoch_end()
        self._log_quartiles("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation loss by timestep quartile."""
        self._log_quartiles("val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The loss of the EMA net, with timesteps and noise seeded by the batch index (comparable across epochs)."""
        x, y = batch
        with self.ema_weights():
            loss, t = self.losses(x, self._eval_labels(y), self._seeded(x, batch_idx))
        self.log("val/loss", loss.mean(), sync_dist=True, batch_size=len(x))
        self._update_quartiles("val", loss, t)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/loss`` and the variational bound ``test/nll`` in nats and bits/dim (EMA net)."""
        x, y = batch
        generator = self._seeded(x, batch_idx)
        with self.ema_weights():
            loss, _ = self.losses(x, self._eval_labels(y), generator)
            nll = self.variational_bound(x, self._eval_labels(y), generator)  # (B,)
        values = {
            "test/loss": loss.mean(),
            "test/nll": nll.mean(),
            "test/nll_bits_per_dim": bits_per_dim(nll, self.num_dims).mean(),
        }
        self.log_dict(values, sync_dist=True, batch_size=len(x))

    def _eval_labels(self, y: Tensor) -> Tensor | None:
        return y if self.conditional else None

    @staticmethod
    def _seeded(x: Tensor, batch_idx: int) -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(10_007 * batch_idx + 17)


def _check_options(min_snr_gamma, label_dropout, nll_timesteps) -> None:
    if min_snr_gamma is not None and min_snr_gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0 (or null to disable), got {min_snr_gamma}")
    if not 0 <= label_dropout < 1:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    if nll_timesteps is not None and nll_timesteps < 1:
        raise ValueError(f"nll_timesteps must be >= 1 (or null for all T terms), got {nll_timesteps}")
