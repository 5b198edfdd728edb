"""Diffusion family: DDPM training on the chosen prediction target, EMA, classifier-free guidance.

Denoising diffusion probabilistic models (Ho et al. 2020, https://arxiv.org/abs/2006.11239): a network
is trained by MSE to predict eps, x0 or v (:mod:`genlit.diffusion.targets`) from x_t = add_noise(x, eps, t)
at timesteps drawn uniformly; optional min-SNR-gamma weighting (Hang et al. 2023). The schedule and the
samplers are parameter-free objects (:mod:`genlit.diffusion`) given the network as a denoiser; besides the
discrete samplers (DDPM, DDIM), the continuous-sigma ones (Euler, Heun, DPM-Solver++) run on the schedule's
timesteps. What the formulations share (guidance, sampling, the loop, the latent-space hooks) is
:class:`~genlit.families.denoising.DenoisingFamily`; :class:`~genlit.families.edm.EDM` is the other formulation.

Metrics: ``train|val|test/loss`` and the loss by timestep quartile (``loss_q1`` .. ``loss_q4``, q1 the
least noisy quarter of the timesteps), ``test/nll`` and ``test/nll_bits_per_dim``: the variational bound of
:mod:`genlit.diffusion.likelihood` (all T terms, or an unbiased stratified estimate with
``nll_timesteps`` terms). Validation, test and sampling use the EMA network.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from genlit.diffusion.likelihood import denoising_term, prior_term, stratified_timesteps
from genlit.diffusion.losses import training_losses
from genlit.diffusion.samplers import DDIMSampler, Denoiser, Sampler
from genlit.diffusion.schedules import LinearSchedule, NoiseSchedule
from genlit.diffusion.targets import PredictionTarget, check_target, split_prediction
from genlit.families.base import NonFinitePolicy, ShapeNetFactory
from genlit.families.denoising import QUARTILES, DenoisingFamily
from genlit.families.protocols import OnnxGraph, OnnxInput
from genlit.objectives.elbo import bits_per_dim


class Diffusion(DenoisingFamily):
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
        _check_options(min_snr_gamma, nll_timesteps)
        levels = schedule if schedule is not None else LinearSchedule()  # hparams keep what was given
        if not isinstance(levels, NoiseSchedule):
            raise ValueError(
                f"Diffusion takes a discrete NoiseSchedule, got {type(levels).__name__}; "
                "an EDMSchedule belongs to genlit.families.edm.EDM"
            )
        default_sampler = sampler if sampler is not None else DDIMSampler(50)
        super().__init__(net, data_shape, num_classes, levels, default_sampler, conditional, label_dropout, ema_decay,
                         optimizer, lr_scheduler, on_nonfinite)  # fmt: skip
        self.save_hyperparameters()

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
        clip = self.hparams.clip_x0 if clip is None else clip
        out = self.guided_net(labels, guidance_scale)

        def denoise(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            return split_prediction(self.hparams.prediction, out(x_t, t), x_t, t, self.schedule, clip)

        return denoise

    def noise_quartile(self, levels: Tensor) -> Tensor:
        """The timestep quartile (B,) of timesteps (B,)."""
        return levels * QUARTILES // self.schedule.num_steps

    # ------------------------------------------------------------------------------------ objective
    def losses(self, x: Tensor, labels: Tensor | None, generator=None) -> tuple[Tensor, Tensor]:
        """Per-example (weighted) MSE on the target (B,) of a data batch x and the timesteps drawn (B,)."""
        z = self.encode_data(x)  # (B, *latent_shape)
        t = self.schedule.sample_timesteps(len(z), z.device, generator)  # (B,)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # (B, *latent_shape)
        hp = self.hparams
        return training_losses(self.net, z, t, self.schedule, hp.prediction, noise, labels, hp.min_snr_gamma), t

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


def _check_options(min_snr_gamma, nll_timesteps) -> None:
    if min_snr_gamma is not None and min_snr_gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0 (or null to disable), got {min_snr_gamma}")
    if nll_timesteps is not None and nll_timesteps < 1:
        raise ValueError(f"nll_timesteps must be >= 1 (or null for all T terms), got {nll_timesteps}")
