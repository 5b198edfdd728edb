"""The first stage of latent diffusion: a KL-regularized autoencoder (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", https://arxiv.org/abs/2112.10752, section 3.1 and appendix G).

The encoder gives a diagonal Gaussian q(z|x) = N(mean, exp(logvar)) over a latent grid; the decoder maps a draw
z back to an image. The loss, per example (summed over pixels and latent dimensions, averaged over the batch,
as in the paper's code, so ``kl_weight`` means what it means there):

    recon(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I))  [+ lambda * disc_weight * (-mean D_patch(D(z)))]

``recon`` is the L1 error (default: it blurs less than L2, as the paper's pixel term; the perceptual LPIPS term
is left out, there is no perceptual network for MNIST here) or the squared error. ``kl_weight`` is tiny (the
paper: 1e-6): the KL only keeps the latents from drifting to arbitrary scales, the latent diffusion model
rescales them by their measured standard deviation anyway (:mod:`genlit.families.latent_diffusion`).

With a ``discriminator`` (a :class:`~genlit.nets.cyclegan.PatchDiscriminator`), after ``disc_start`` autoencoder
steps a hinge (or least-squares) patch GAN term is added, weighted by ``disc_weight`` times the paper's adaptive
weight lambda = |grad_L recon| / (|grad_L gan| + 1e-4) (gradients at the decoder's last layer L, clamped to
[0, 1e4]); ``adaptive_weight: false`` uses ``disc_weight`` alone. Both parts step by manual optimization, one
optimizer each (the autoencoder's, then the discriminator's on the same batch).

The autoencoder is not a generative family: it has no learned prior to sample from (its N(0, I) prior is far
from the latents' distribution at this KL weight). ``genlit test`` reports its reconstruction error. Logged:
``recon`` (the loss term), ``mse`` (per pixel, [0, 1] units), ``kl`` (nats per example), ``latent_std`` (the
standard deviation of the posterior draws, what the latent diffusion model divides by) and, with the GAN,
``g_adv``, ``d_loss`` and ``disc_lambda``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.families.base import NonFinitePolicy
from genlit.families.manual_steps import backward_synced, frozen
from genlit.families.training import TrainingModule
from genlit.families.transfer import trainable_parameters
from genlit.objectives.adversarial import discriminator_loss, generator_loss
from genlit.objectives.elbo import kl_per_dim
from genlit.objectives.vector_quantization import squared_error
from genlit.optim import optimizer_config

Reconstruction = Literal["l1", "l2"]
AdversarialLoss = Literal["hinge", "least_squares"]
AutoencoderNetFactory = Callable[[tuple[int, ...]], nn.Module]
"""A net class taking ``(data_shape)`` with ``encode(x) -> (mean, logvar)``, ``decode(z)``, ``latent_shape`` and an
``out_conv`` last layer (:class:`~genlit.nets.autoencoder.KLAutoencoderNet`); YAML gives its other init_args."""
DiscriminatorFactory = Callable[[tuple[int, ...]], nn.Module]


class KLAutoencoder(TrainingModule):
    """KL-regularized autoencoder with an optional patch discriminator (module docstring).

    Args:
        net: factory called as ``net(data_shape)`` (:class:`~genlit.nets.autoencoder.KLAutoencoderNet`).
        discriminator: factory called as ``discriminator(data_shape)`` giving patch logits; None: no GAN term.
        data_shape / num_classes: linked from the DataModule by the CLI (labels are not used).
        reconstruction: ``l1`` (default) or ``l2``, summed over pixels.
        kl_weight: weight of the KL term (summed over latent dimensions).
        disc_start: autoencoder steps before the GAN term and the discriminator's training start.
        disc_weight: weight of the GAN term (times the adaptive weight when ``adaptive_weight``).
        adaptive_weight: the paper's gradient-norm ratio at the decoder's last layer.
        adversarial_loss: ``hinge`` (the paper's) or ``least_squares``.
        optimizer / d_optimizer: factories of the autoencoder's and the discriminator's optimizers.
        lr_scheduler: of the autoencoder's optimizer, stepped every autoencoder step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("recon", "kl")
    metric_panels = {
        "reconstruction": ("recon",),
        "reconstruction MSE (per pixel, [0, 1] units)": ("mse",),
        "KL (nats per example)": ("kl",),
        "latent std": ("latent_std",),
        "adversarial": ("g_adv", "d_loss"),
    }

    def __init__(
        self,
        net: AutoencoderNetFactory,
        discriminator: DiscriminatorFactory | None = None,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        reconstruction: Reconstruction = "l1",
        kl_weight: float = 1e-6,
        disc_start: int = 0,
        disc_weight: float = 0.5,
        adaptive_weight: bool = True,
        adversarial_loss: AdversarialLoss = "hinge",
        optimizer: OptimizerCallable = torch.optim.Adam,
        d_optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        _check_options(reconstruction, kl_weight, disc_start, disc_weight, adversarial_loss)
        super().__init__(optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.net = net(self.data_shape)
        self.discriminator = discriminator(self.data_shape) if discriminator is not None else None
        self._d_factory = d_optimizer
        self._scheduler = None  # the autoencoder optimizer's, set by configure_optimizers
        self.register_buffer("_ae_steps", torch.zeros((), dtype=torch.long))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent grid (latent_channels, h, w)."""
        return tuple(self.net.latent_shape)

    @property
    def autoencoder_steps(self) -> int:
        """Autoencoder optimizer steps taken so far (``global_step`` also counts the discriminator's)."""
        return int(self._ae_steps)

    # ------------------------------------------------------------------------------------------ the model
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and log-variance (B, *latent_shape) of q(z|x) for images x (B, *data_shape) in [-1, 1]."""
        return self.net.encode(x)

    def encode(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Latents (B, *latent_shape) of images x (B, *data_shape) in [-1, 1]: the posterior mean, or a draw."""
        mean, logvar = self.posterior(x)
        if not sample:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, *data_shape) in [-1, 1] of latents z (B, *latent_shape)."""
        return self.net.decode(z).clamp(-1, 1)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images x (B, *data_shape) through the posterior mean: (B, *data_shape) in [-1, 1]."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------------------------------ the loss
    def terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms of images x (B, *data_shape): ``loss`` = ``recon`` + kl_weight ``kl`` (per-example sums,
        batch means), ``mse`` and ``latent_std``; and the raw reconstruction (B, *data_shape)."""
        mean, logvar = self.posterior(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, device=x.device,
                                                      dtype=mean.dtype)  # fmt: skip
        out = self.net.decode(z)  # (B, *data_shape)
        error = (out.float() - x.float()).abs() if self.hparams.reconstruction == "l1" else (out.float() - x).square()
        recon = error.flatten(1).sum(1).mean()
        kl = kl_per_dim(mean.flatten(1), logvar.flatten(1)).sum(1).mean()
        terms = {
            "loss": recon + self.hparams.kl_weight * kl,
            "recon": recon,
            "kl": kl,
            "mse": squared_error(out.detach().clamp(-1, 1), x),
            "latent_std": z.detach().float().std(),
        }
        return terms, out

    def adaptive_lambda(self, recon: Tensor, g_adv: Tensor) -> Tensor:
        """The paper's adaptive weight |grad recon| / (|grad g_adv| + 1e-4) at the decoder's last layer, clamped to
        [0, 1e4], without gradient (a scalar)."""
        last = self.net.out_conv.weight
        g_recon = torch.autograd.grad(recon, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_adv, last, retain_graph=True)[0]
        return (g_recon.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    @property
    def adversarial(self) -> bool:
        """Whether the GAN term is on at this step (a discriminator, past ``disc_start``)."""
        return self.discriminator is not None and self.autoencoder_steps >= self.hparams.disc_start

    # ------------------------------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One autoencoder step (with the GAN term once it is on), then one discriminator step."""
        x, _ = batch
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        adversarial = self.adversarial
        with frozen(self.discriminator) if self.discriminator is not None else nullcontext():
            terms, out = self.terms(x)
            loss = terms.pop("loss")
            if adversarial:
                terms["g_adv"] = generator_loss(self.hparams.adversarial_loss, self.discriminator(out))
                weight = self.adaptive_lambda(terms["recon"], terms["g_adv"]) if self.hparams.adaptive_weight else 1
                terms["disc_lambda"] = torch.as_tensor(weight, dtype=torch.float32, device=x.device)
                loss = loss + self.hparams.disc_weight * weight * terms["g_adv"]
            optimizers[0].zero_grad(set_to_none=True)
            finite = backward_synced(self, loss, self.net)
        if self.loss_is_finite(loss, everywhere=finite, recon=terms["recon"], kl=terms["kl"]):
            optimizers[0].step()
            if self._scheduler is not None:
                self._scheduler.step()
            self._ae_steps += 1
            self.log_train_step(loss=loss.detach(), **{k: v.detach() for k, v in terms.items()})
        if adversarial:
            self._discriminator_step(x, out.detach(), optimizers[1])

    def _discriminator_step(self, x: Tensor, fake: Tensor, opt) -> None:
        d_loss = discriminator_loss(self.hparams.adversarial_loss, self.discriminator(x), self.discriminator(fake))
        opt.zero_grad(set_to_none=True)
        finite = backward_synced(self, d_loss, self.discriminator)
        if self.loss_is_finite(d_loss, everywhere=finite):
            opt.step()
            self.log_train_step(d_loss=d_loss.detach())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/recon``, ``val/mse``, ``val/kl``, ``val/latent_std`` and ``val/loss`` (seeded posterior draws)."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The validation metrics on the test split: the reconstruction error ``test/recon`` and ``test/mse``."""
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        x, _ = batch
        generator = torch.Generator(device=x.device).manual_seed(10_007 * batch_idx + 17)
        terms, _ = self.terms(x, generator)
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, sync_dist=True, batch_size=len(x))

    # ------------------------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        """The autoencoder's optimizer (with its scheduler, stepped here) and, with a discriminator, its own."""
        ae_factory, scheduler_factory = self._factories
        optimizer = ae_factory(trainable_parameters(self.net, "the autoencoder"))
        configs = [optimizer_config(optimizer, scheduler_factory)]
        self._scheduler = configs[0].get("lr_scheduler", {}).get("scheduler")
        if self.discriminator is not None:
            configs.append({"optimizer": self._d_factory(trainable_parameters(self.discriminator,
                                                                              "the discriminator"))})  # fmt: skip
        return configs


def _check_options(reconstruction, kl_weight, disc_start, disc_weight, adversarial_loss) -> None:
    if reconstruction not in ("l1", "l2"):
        raise ValueError(f"reconstruction must be 'l1' or 'l2', got {reconstruction!r}")
    if adversarial_loss not in ("hinge", "least_squares"):
        raise ValueError(f"adversarial_loss must be 'hinge' or 'least_squares', got {adversarial_loss!r}")
    if kl_weight < 0 or disc_start < 0 or disc_weight < 0:
        raise ValueError(
            f"kl_weight, disc_start and disc_weight must be >= 0, got {kl_weight}, {disc_start} and {disc_weight}"
        )
