"""GAN family: adversarial training with manual optimization.

One training batch = one discriminator step; every ``n_critic``-th batch also makes one generator step.

What the counters count: Lightning's ``trainer.global_step`` (and so ``max_steps``) counts *every optimizer
step*, the discriminator's and the generator's alike. With ``n_critic=1`` each batch advances
``global_step`` by 2, so ``max_steps: 20000`` trains 10,000 generator steps; with ``n_critic=5``, five
batches advance it by 6. ``GAN.generator_steps`` gives the number of generator steps taken so far.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy, ShapeNetFactory
from genlit.families.manual_steps import backward_synced, frozen
from genlit.families.protocols import OnnxGraph, OnnxInput
from genlit.families.transfer import trainable_parameters
from genlit.objectives.adversarial import (
    LossName,
    check_loss_name,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    path_length_penalty,
    r1_penalty,
)
from genlit.objectives.discriminator_augment import DiscriminatorAugment
from genlit.optim import optimizer_config
from genlit.seeding import SampleRNG


class GAN(GenerativeFamily):
    """Generative adversarial network (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661).

    Args:
        generator: factory of G, called as ``generator(data_shape, num_classes)``; G(z, y) -> samples.
            It must expose ``latent_dim``.
        discriminator: factory of D, called the same way; D(x, y) -> (B,) raw outputs (logits/critic values).
        data_shape: shape of one sample, linked from the DataModule by the CLI.
        num_classes: number of classes of the data, linked from the DataModule by the CLI.
        conditional: train a class-conditional GAN (conditional G, projection D); needs labelled data.
        loss: adversarial loss: non_saturating, hinge, wasserstein or least_squares.
        n_critic: discriminator steps (batches) per generator step (WGAN: 5).
        gp_weight: weight of the WGAN-GP gradient penalty (Gulrajani et al. 2017); 0 disables it.
        r1_gamma: R1 penalty weight gamma, the penalty is gamma/2 * E||grad D(x)||^2 (Mescheder et al.
            2018); 0 disables it.
        r1_every: lazy regularization (StyleGAN2, Karras et al. 2020, https://arxiv.org/abs/1912.04958): R1 on
            every ``r1_every``-th discriminator step only, weighted by ``r1_every`` (StyleGAN2: 16).
        pl_weight: weight of the path length regularizer of a style generator (StyleGAN2: 2); 0 disables it.
        pl_every: the regularizer on every ``pl_every``-th generator step, weighted by ``pl_every`` (StyleGAN2: 4),
            on half the batch.
        augment: what D sees: an augmentation policy applied to every real and fake image D judges, in both
            steps (:class:`~genlit.objectives.discriminator_augment.AdaptiveAugment`, ADA, or ``DiffAugment``);
            None: the images themselves.
        ema_decay: decay of the exponential moving average of G used by ``sample`` and stored in the
            checkpoint, warmed up from the start of training (:meth:`GenerativeFamily.keep_ema`); 0 disables the
            EMA (then ``sample`` uses G itself).
        g_optimizer / d_optimizer: optimizer factories (TTUR: different learning rates and betas).
        g_lr_scheduler / d_lr_scheduler: optional LR scheduler factories, stepped after each step of
            their optimizer (``lr_scheduler_interval="step"``) or each epoch (``"epoch"``).
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("d_loss", "g_loss")
    lora_trains = ("discriminator.*",)  # D judges the fine-tuned G on the new data: it trains whole
    metric_panels = {
        "G and D losses": ("g_loss", "d_loss"),
        "D(x) and D(G(z)): D's mean output": ("d_real", "d_fake"),
        "ADA: augmentation probability p": ("augment_p",),
        "Progressive growing: D's resolution and fade-in weight": ("growth_resolution", "growth_alpha"),
        "Regularizers": ("r1_penalty", "gradient_penalty", "path_length_penalty"),
        **SAMPLE_QUALITY_PANELS,
    }

    def __init__(
        self,
        generator: ShapeNetFactory,
        discriminator: ShapeNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        loss: LossName = "non_saturating",
        n_critic: int = 1,
        gp_weight: float = 0.0,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        pl_weight: float = 0.0,
        pl_every: int = 4,
        augment: DiscriminatorAugment | None = None,
        ema_decay: float = 0.999,
        g_optimizer: OptimizerCallable = torch.optim.Adam,
        d_optimizer: OptimizerCallable = torch.optim.Adam,
        g_lr_scheduler: LRSchedulerCallable | None = None,
        d_lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        check_loss_name(loss)
        _check_options(n_critic, lr_scheduler_interval, r1_every, pl_every)
        super().__init__(num_classes, conditional, on_nonfinite=on_nonfinite)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.data_shape = tuple(data_shape)
        net_classes = num_classes if conditional else 0
        self.generator = generator(self.data_shape, net_classes)
        self.discriminator = self._build_discriminator(discriminator, net_classes)
        if pl_weight > 0 and not isinstance(self.generator, StyleGenerator):
            raise ValueError(
                f"pl_weight needs a generator with a mapping network and a synthesis network (StyleGANGenerator); "
                f"{type(self.generator).__name__} has none: set pl_weight to 0"
            )
        self.augment = augment
        self._growing = tuple(  # the nets that grow (progressive growing), found once rather than every batch
            name for name in ("generator", "discriminator")
            if isinstance(getattr(self, name), GrowingNet) and getattr(self, name).growth is not None
        )  # fmt: skip
        self.keep_ema("generator", ema_decay)
        self._optimizer_factories = (d_optimizer, g_optimizer)
        self._scheduler_factories = (d_lr_scheduler, g_lr_scheduler)
        self.register_buffer("_generator_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("_discriminator_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("_pl_mean", torch.zeros(()))  # running mean of the path lengths
        self._scheduler_slots: list = [None, None]  # (D, G) schedulers, set by configure_optimizers

    @property
    def generator_steps(self) -> int:
        """Generator optimizer steps taken so far (``global_step`` counts D and G steps together)."""
        return int(self._generator_steps)

    # ----------------------------------------------------------------------------------------- sampling
    def noise(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Latent noise z ~ N(0, I) of shape (num, latent_dim) on the module's device."""
        return torch.randn(num, self.generator.latent_dim, generator=generator, device=self.device)

    def onnx_graph(self) -> OnnxGraph:
        """The generator: ``z`` (B, latent_dim) and, when conditional, ``labels`` (B,) -> ``images`` (B, *data_shape)
        (InfoGAN's ``z`` is the generator's whole input, codes included: :meth:`InfoGAN.generator_input`)."""
        inputs = [OnnxInput("z", ("batch", self.generator.latent_dim))]
        if self.conditional:
            inputs.append(OnnxInput("labels", ("batch",), torch.long, self.num_classes))
        names = ", ".join(i.name for i in inputs)
        return OnnxGraph(self.generator, tuple(inputs), "images", f"the generator: ({names}) -> images")

    def draw(self, num: int, labels: Tensor | None, rng: SampleRNG, *, truncation: float = 1.0) -> Tensor:
        """``num`` samples G(z, labels) (num, *data_shape), z ~ N(0, I) per sample from ``rng``.

        ``truncation``: the truncation trick of a style generator (Karras et al. 2019, sec. 4): each sample's
        w moves towards the average w by this factor, 1 keeps it, 0 gives the average image; lower values
        trade variety for typicality (``genlit sample --truncation 0.7``).
        """
        z = rng.randn(self.generator.latent_dim)  # (num, latent_dim)
        if truncation == 1.0:
            return self.generator(z, labels)  # (num, *data_shape)
        return self.generator(z, labels, truncation_psi=truncation)  # (num, *data_shape)

    def validate_sample_options(self, truncation: float = 1.0, **options) -> None:
        """``truncation`` needs a style generator and is >= 0 (above 1 exaggerates the styles)."""
        if truncation != 1.0 and not isinstance(self.generator, StyleGenerator):
            raise ValueError(
                f"truncation needs a generator with a mapping network (StyleGANGenerator); "
                f"{type(self.generator).__name__} has none: leave truncation at 1"
            )
        if truncation < 0:
            raise ValueError(f"truncation must be >= 0 (1: none, 0: the average image), got {truncation}")

    # ----------------------------------------------------------------------------------------- training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One discriminator step; every ``n_critic``-th batch also one generator step."""
        real, y = batch  # (B, *data_shape), (B,)
        labels = y if self.conditional else None
        d_opt, g_opt = self.optimizers()
        self._advance_growth(real.shape[0] * self.trainer.world_size)
        self._discriminator_step(real, labels, d_opt)
        if (batch_idx + 1) % self.hparams.n_critic == 0:
            self._generator_step(real.shape[0], labels, g_opt)

    def _advance_growth(self, images: int) -> None:
        """Tell growing nets (progressive growing) that D is about to see ``images`` more real images. (G's EMA
        copies the count with the other integer buffers at each update.)"""
        for name in self._growing:
            getattr(self, name).advance_growth(images)

    def _discriminator_step(self, real: Tensor, labels: Tensor | None, opt) -> None:
        hp = self.hparams
        with frozen(self.generator):
            fake, codes = self._fake(real.shape[0], labels)  # (B, *data_shape)
        r1_now = hp.r1_gamma > 0 and int(self._discriminator_steps) % hp.r1_every == 0
        if r1_now:
            real = real.detach().requires_grad_(True)
        loss, real_out, stats = self._discriminator_loss(real, fake, labels, codes)  # real_out: (B,)
        if hp.gp_weight > 0:
            stats["gradient_penalty"] = gradient_penalty(lambda v: self.discriminator(v, labels), real.detach(), fake)
            loss = loss + hp.gp_weight * stats["gradient_penalty"]
        if r1_now:
            stats["r1_penalty"] = r1_penalty(real_out, real)
            loss = loss + hp.r1_gamma / 2 * hp.r1_every * stats["r1_penalty"]
        opt.zero_grad(set_to_none=True)
        if not self.loss_is_finite(loss, everywhere=backward_synced(self, loss, self.discriminator), **stats):
            return
        opt.step()
        self._step_scheduler(0)
        self._discriminator_steps += 1
        if self.augment is not None:
            self.augment.observe(real_out, self._sum_over_ranks)
            if self.augment.probability is not None:
                stats["augment_p"] = torch.tensor(self.augment.probability, device=self.device)
        if "discriminator" in self._growing:
            resolution, alpha = self.discriminator.growth_state()
            stats["growth_resolution"] = torch.tensor(float(resolution), device=self.device)
            stats["growth_alpha"] = torch.tensor(alpha, device=self.device)
        self.log_train_step(d_loss=loss, **stats)

    def _build_discriminator(self, factory: ShapeNetFactory, num_classes: int) -> nn.Module:
        """D from its factory (families whose D has auxiliary heads ask for them here)."""
        return factory(self.data_shape, num_classes)

    def _fake(self, num: int, labels: Tensor | None) -> tuple[Tensor, Any]:
        """A training batch G(z, labels) (num, *data_shape) and the codes it was drawn with beside the noise, for
        families whose G takes more than noise (InfoGAN); None here."""
        return self.generator(self.noise(num), labels), None

    def _discriminator_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None, codes: Any):
        """(D's loss before penalties, D's outputs on ``real`` (B,), the stats to log); families with auxiliary
        heads add their terms (``codes``: those of :meth:`_fake`)."""
        real_out, fake_out = self._judge(real, labels), self._judge(fake, labels)  # (B,) each
        loss = discriminator_loss(self.hparams.loss, real_out, fake_out)
        return loss, real_out, {"d_real": real_out.mean(), "d_fake": fake_out.mean()}

    def _generator_loss(self, fake: Tensor, labels: Tensor | None, codes: Any) -> tuple[Tensor, dict]:
        """(G's loss before regularizers, the stats to log: ``g_loss`` is that loss) on its batch ``fake``."""
        loss = generator_loss(self.hparams.loss, self._judge(fake, labels))
        return loss, {"g_loss": loss}

    def _judge(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """D's raw outputs (B,) on ``images`` as D sees them (through the augmentation policy, if any)."""
        return self.discriminator(images if self.augment is None else self.augment(images), labels)

    def _sum_over_ranks(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def _generator_step(self, batch_size: int, labels: Tensor | None, opt) -> None:
        hp = self.hparams
        with frozen(self.discriminator):
            fake, codes = self._fake(batch_size, labels)  # (B, *data_shape)
            loss, stats = self._generator_loss(fake, labels, codes)
            if hp.pl_weight > 0 and int(self._generator_steps) % hp.pl_every == 0:
                stats["path_length_penalty"] = self._path_length_penalty(batch_size, labels)
                loss = loss + hp.pl_weight * hp.pl_every * stats["path_length_penalty"]
            opt.zero_grad(set_to_none=True)
            finite = backward_synced(self, loss, self.generator)
        if not self.loss_is_finite(loss, everywhere=finite, **stats):
            return
        opt.step()
        self._step_scheduler(1)
        self._generator_steps += 1
        self.update_ema()
        self.log_train_step(**stats)

    def _path_length_penalty(self, batch_size: int, labels: Tensor | None) -> Tensor:
        """StyleGAN2's path length penalty on half the batch; moves the running mean length (decay 0.01)."""
        half = max(batch_size // 2, 1)
        ws = self.generator.mapping(self.noise(half), None if labels is None else labels[:half])  # (b, w_dim)
        ws = ws[:, None, :].expand(-1, self.generator.num_ws, -1)  # (b, num_ws, w_dim)
        penalty, lengths = path_length_penalty(self.generator.synthesis, ws, self._pl_mean)
        mean = lengths.detach().mean()
        self._pl_mean.lerp_(self.trainer.strategy.reduce(mean, reduce_op="mean"), 0.01)
        return penalty

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Also store the augmentation policy's state (ADA's ``p``), so a resumed run continues with it."""
        super().on_save_checkpoint(checkpoint)
        if self.augment is not None:
            checkpoint["discriminator_augment"] = self.augment.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take back the augmentation policy's state."""
        super().on_load_checkpoint(checkpoint)
        if self.augment is not None and "discriminator_augment" in checkpoint:
            self.augment.load_state_dict(checkpoint["discriminator_augment"])

    def _step_scheduler(self, index: int) -> None:
        if self.hparams.lr_scheduler_interval != "step":
            return
        schedulers = self._schedulers()
        if schedulers[index] is not None:
            schedulers[index].step()

    def on_train_epoch_end(self) -> None:
        """Log the epoch means; step the LR schedulers when ``lr_scheduler_interval="epoch"``."""
        super().on_train_epoch_end()
        if self.hparams.lr_scheduler_interval == "epoch":
            for scheduler in self._schedulers():
                if scheduler is not None:
                    scheduler.step()

    def _schedulers(self) -> list:
        return self._scheduler_slots

    # --------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """D's mean output on held-out real data and on EMA samples (watch for D overfitting)."""
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """As validation, on the test split."""
        self._evaluate(batch, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        real, y = batch
        labels = y if self.conditional else None
        fake = self.sample(real.shape[0], labels=labels)  # (B, *data_shape)
        real_out = self.discriminator(real, labels)
        fake_out = self.discriminator(fake, labels)
        loss = discriminator_loss(self.hparams.loss, real_out, fake_out)
        values = {"d_real": real_out.mean(), "d_fake": fake_out.mean(), "d_loss": loss}
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=True)

    # ------------------------------------------------------------------------------------- optimization
    def configure_optimizers(self):
        """Separate D and G optimizers (index 0: D, 1: G), each with its optional scheduler."""
        d_factory, g_factory = self._optimizer_factories
        d_opt = d_factory(trainable_parameters(self.discriminator, "the discriminator"))  # frozen ones left out
        g_opt = g_factory(trainable_parameters(self.generator, "the generator"))
        configs = [
            optimizer_config(opt, factory, self.hparams.lr_scheduler_interval)
            for opt, factory in zip([d_opt, g_opt], self._scheduler_factories, strict=True)
        ]
        # Returned to Lightning so their states are checkpointed and restored; stepped here, by hand.
        self._scheduler_slots = [config.get("lr_scheduler", {}).get("scheduler") for config in configs]
        return configs


@runtime_checkable
class StyleGenerator(Protocol):
    """A generator with a mapping network z -> w and a synthesis network of ``num_ws`` styles
    (:class:`~genlit.nets.stylegan.StyleGANGenerator`): truncation and path length regularization need it."""

    num_ws: int

    def mapping(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...

    def synthesis(self, ws: Tensor) -> Tensor: ...


@runtime_checkable
class GrowingNet(Protocol):
    """A net that grows while it trains (progressive growing, Karras et al. 2018): it keeps its own count of the
    real images D has seen (a buffer, so checkpoints and resumes carry it) and derives its resolution and
    fade-in weight from that count. ``growth``: its schedule, None when it does not grow."""

    growth: object | None

    def advance_growth(self, images: int) -> None: ...

    def growth_state(self) -> tuple[int, float]: ...


def _check_options(n_critic: int, interval: str, r1_every: int = 1, pl_every: int = 1):
    if n_critic < 1:
        raise ValueError(f"n_critic must be >= 1, got {n_critic}")
    if r1_every < 1 or pl_every < 1:
        raise ValueError(f"r1_every and pl_every must be >= 1 (1: every step), got {r1_every} and {pl_every}")
    if interval not in ("step", "epoch"):
        raise ValueError(f"lr_scheduler_interval must be 'step' or 'epoch', got {interval!r}")
