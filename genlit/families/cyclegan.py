"""CycleGAN: unpaired image-to-image translation (Zhu et al. 2017, https://arxiv.org/abs/1703.10593).

Two generators, G_AB: A -> B and G_BA: B -> A, and two discriminators, D_A (real A images against G_BA's) and D_B
(real B against G_AB's), trained on batches (a, b) of the two domains that hold no pairs:

- least-squares adversarial losses (Mao et al. 2017, https://arxiv.org/abs/1611.04076): the generators minimise
  (D(G(x)) - 1)^2, the discriminators (D(y) - 1)^2 / 2 + D(G(x))^2 / 2 (the paper halves D's objective);
- cycle consistency lambda_A |G_BA(G_AB(a)) - a|_1 + lambda_B |G_AB(G_BA(b)) - b|_1 (``cycle_weight_a``,
  ``cycle_weight_b``: the paper's lambda = 10 for both; the official code's ``lambda_A`` and ``lambda_B``). When B
  holds information A cannot (colour, texture), B -> A -> B can only be met by hiding it in the A image, a known
  failure of CycleGAN (Chu et al. 2017, https://arxiv.org/abs/1712.02950); a smaller lambda_B asks for less of it;
- identity ``identity_weight`` x (lambda_A |G_BA(a) - a|_1 + lambda_B |G_AB(b) - b|_1) (the paper's section 5.2:
  0.5), which keeps colours where they need not change. It only exists when A and B have the same number of channels:
  G_BA cannot read an A image otherwise. Between domains of different channels (grey digits and colour ones) it
  must be 0, and a positive weight is refused in one line rather than silently dropped;
- a history of ``pool_size`` generated images per domain (:class:`~genlit.objectives.image_pool.ImagePool`,
  Shrivastava et al. 2017): D sees past fakes half of the time.

One batch = one generator step (both generators, one optimizer, the discriminators frozen), then one discriminator
step (both discriminators, one optimizer) on that step's fakes through the pools; each loss through
``manual_backward`` and synchronised part by part under DDP (:mod:`genlit.families.manual_steps`). Lightning's
``global_step`` (and ``max_steps``) counts both optimizer steps: 2 per batch, so ``max_steps: 6000`` is 3,000 batches.

How it fits the family contract: CycleGAN does not sample from noise; it maps an image of one domain to the other.
It is therefore a :class:`~genlit.families.training.TrainingModule` (optimizers, non-finite checks, exact resume)
offering the :class:`~genlit.families.protocols.Translator` capability (``translate(x, direction)``), not a
:class:`~genlit.families.base.GenerativeFamily`: a ``sample(num, seed)`` would have to invent inputs, and
``genlit sample`` on its checkpoint says it has no ``sample()``. ``genlit translate``, the
:class:`~genlit.callbacks.translation_grid.TranslationGrid` callback and notebooks test for ``Translator``.

The pools are checkpointed (``checkpoint["image_pools"]``: at most 2 x ``pool_size`` images, rank 0's under DDP,
where each rank keeps its own pool), so a resumed run's discriminators see the same history; they are not in the
state dict, which holds the four networks only. No EMA: the paper has none.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.families.manual_steps import backward_synced, frozen
from genlit.families.training import NonFinitePolicy, TrainingModule
from genlit.families.transfer import trainable_parameters
from genlit.objectives.adversarial import discriminator_loss, generator_loss
from genlit.objectives.image_pool import ImagePool
from genlit.optim import optimizer_config

Direction = Literal["AB", "BA"]
TranslatorFactory = Callable[[tuple[int, ...], tuple[int, ...]], nn.Module]
"""A generator class (or callable) taking ``(in_shape, out_shape)``; YAML gives its other init_args."""
CriticFactory = Callable[[tuple[int, ...]], nn.Module]
"""A discriminator class (or callable) taking ``(data_shape)``; D(x) -> raw scores of any shape (B, ...)."""
POOLS_KEY = "image_pools"


def check_direction(direction: str) -> None:
    """One clear error unless ``direction`` is ``AB`` or ``BA``."""
    if direction not in get_args(Direction):
        raise ValueError(f"direction must be AB (A to B) or BA (B to A), got {direction!r}")


class CycleGAN(TrainingModule):
    """CycleGAN (module docstring): two generators, two PatchGAN discriminators, cycle and identity L1.

    Args:
        generator: factory of G_AB and G_BA, called as ``generator(in_shape, out_shape)``
            (:class:`~genlit.nets.cyclegan.ResnetGenerator`).
        discriminator: factory of D_A and D_B, called as ``discriminator(data_shape)``
            (:class:`~genlit.nets.cyclegan.PatchDiscriminator`).
        shape_a / shape_b: (C, H, W) of domain A's and B's images, linked from the DataModule by the CLI.
        cycle_weight_a: lambda_A, the weight of the cycle L1 of A -> B -> A (the paper: 10).
        cycle_weight_b: lambda_B, the weight of the cycle L1 of B -> A -> B (the paper: 10).
        identity_weight: the identity L1's weight relative to lambda_A (A images) and lambda_B (B images) (the
            paper: 0.5); 0 disables it, and it must be 0 when A and B have different numbers of channels.
        pool_size: generated images kept per domain for the discriminators (the paper: 50; 0: none).
        g_optimizer / d_optimizer: optimizer factories of the two generators together and of the two
            discriminators together (the paper: Adam, lr 2e-4, betas (0.5, 0.999)).
        g_lr_scheduler / d_lr_scheduler: optional LR scheduler factories, stepped after each step of their
            optimizer (``lr_scheduler_interval="step"``) or each epoch (``"epoch"``).
        lr_scheduler_interval: ``step`` or ``epoch``.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("g_loss", "d_loss", "cycle_aba", "cycle_bab")
    lora_trains = ("discriminators.*",)  # as a GAN's: the discriminators judge the fine-tuned generators whole
    metric_panels = {
        "adversarial (least squares)": ("g_adv_ab", "g_adv_ba", "d_a", "d_b"),
        "cycle L1": ("cycle_aba", "cycle_bab"),
        "identity L1": ("identity_a", "identity_b"),
        "total": ("g_loss", "d_loss"),
    }

    def __init__(
        self,
        generator: TranslatorFactory,
        discriminator: CriticFactory,
        shape_a: tuple[int, ...] = (1, 28, 28),
        shape_b: tuple[int, ...] = (3, 28, 28),
        cycle_weight_a: float = 10.0,
        cycle_weight_b: float = 10.0,
        identity_weight: float = 0.5,
        pool_size: int = 50,
        g_optimizer: OptimizerCallable = torch.optim.Adam,
        d_optimizer: OptimizerCallable = torch.optim.Adam,
        g_lr_scheduler: LRSchedulerCallable | None = None,
        d_lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        weights = (cycle_weight_a, cycle_weight_b, identity_weight)
        _check_options(tuple(shape_a), tuple(shape_b), weights, pool_size, lr_scheduler_interval)
        super().__init__(on_nonfinite=on_nonfinite)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.shape_a, self.shape_b = tuple(shape_a), tuple(shape_b)
        self.generators = nn.ModuleDict({"AB": generator(self.shape_a, self.shape_b),
                                         "BA": generator(self.shape_b, self.shape_a)})  # fmt: skip
        self.discriminators = nn.ModuleDict({"A": discriminator(self.shape_a), "B": discriminator(self.shape_b)})
        self.pools = {"A": ImagePool(pool_size), "B": ImagePool(pool_size)}  # fakes of each domain
        self._optimizer_factories = (g_optimizer, d_optimizer)
        self._scheduler_factories = (g_lr_scheduler, d_lr_scheduler)
        self._scheduler_slots: list = [None, None]  # (G, D) schedulers, set by configure_optimizers
        self.register_buffer("_generator_steps", torch.zeros((), dtype=torch.long))

    @property
    def generator_steps(self) -> int:
        """Generator optimizer steps taken so far (batches trained; ``global_step`` counts D's steps as well)."""
        return int(self._generator_steps)

    # -------------------------------------------------------------------------------------------- translating
    @torch.no_grad()
    def translate(self, x: Tensor, direction: Direction) -> Tensor:
        """Images of the other domain, (N, *shape_b) for ``AB`` from x (N, *shape_a) in [-1, 1], or (N, *shape_a)
        for ``BA`` from x (N, *shape_b); in eval mode, without gradients, every sub-module's mode restored."""
        check_direction(direction)
        shape = self.shape_a if direction == "AB" else self.shape_b
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"translate {direction} takes images of domain {direction[0]} (N, {', '.join(map(str, shape))}); "
                f"got shape {tuple(x.shape)}"
            )
        with _eval_mode(self):
            return self.generators[direction](x.to(self.device))  # (N, *shape of the other domain)

    # --------------------------------------------------------------------------------------------- training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One generator step on (a, b), then one discriminator step on its fakes (module docstring)."""
        a, b = batch  # (B, *shape_a), (Bb, *shape_b): the two domains' batches, unpaired
        g_opt, d_opt = self.optimizers()
        fakes = self._generator_step(a, b, g_opt)
        self._discriminator_step({"A": a, "B": b}, fakes, d_opt)

    def _generator_step(self, a: Tensor, b: Tensor, opt) -> dict[str, Tensor]:
        """Both generators' adversarial, cycle and identity losses, one step; the fakes {domain: images}."""
        hp, gen, disc = self.hparams, self.generators, self.discriminators
        with frozen(disc):
            fake_b, fake_a = gen["AB"](a), gen["BA"](b)  # (B, *shape_b), (Bb, *shape_a)
            terms = {
                # twice genlit's least_squares generator loss: the paper's (D(G(x)) - 1)^2, without the 1/2
                "g_adv_ab": 2 * generator_loss("least_squares", disc["B"](fake_b)),
                "g_adv_ba": 2 * generator_loss("least_squares", disc["A"](fake_a)),
                "cycle_aba": F.l1_loss(gen["BA"](fake_b), a),
                "cycle_bab": F.l1_loss(gen["AB"](fake_a), b),
            }
            lambda_a, lambda_b = hp.cycle_weight_a, hp.cycle_weight_b
            loss = terms["g_adv_ab"] + terms["g_adv_ba"] + lambda_a * terms["cycle_aba"] + lambda_b * terms["cycle_bab"]
            if hp.identity_weight > 0:
                terms["identity_a"] = F.l1_loss(gen["BA"](a), a)
                terms["identity_b"] = F.l1_loss(gen["AB"](b), b)
                identity = lambda_a * terms["identity_a"] + lambda_b * terms["identity_b"]
                loss = loss + hp.identity_weight * identity
            opt.zero_grad(set_to_none=True)
            finite = backward_synced(self, loss, gen)
        if self.loss_is_finite(loss, everywhere=finite, **terms):
            opt.step()
            self._step_scheduler(0)
            self._generator_steps += 1
            self.log_train_step(g_loss=loss, **terms)
        return {"A": fake_a.detach(), "B": fake_b.detach()}

    def _discriminator_step(self, real: dict[str, Tensor], fakes: dict[str, Tensor], opt) -> None:
        """D_A and D_B on real images and on the generator step's fakes through the history pools, one step."""
        terms = {}
        for domain, disc in self.discriminators.items():
            shown = self.pools[domain].query(fakes[domain])  # (B, *shape): fresh or past fakes
            terms[f"d_{domain.lower()}"] = discriminator_loss("least_squares", disc(real[domain]), disc(shown))
        loss = terms["d_a"] + terms["d_b"]
        opt.zero_grad(set_to_none=True)
        finite = backward_synced(self, loss, self.discriminators)
        if self.loss_is_finite(loss, everywhere=finite, **terms):
            opt.step()
            self._step_scheduler(1)
            self.log_train_step(d_loss=loss, **terms)

    # ------------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val/cycle_aba`` (loader 0: A images) or ``val/cycle_bab`` (loader 1: B images): the cycle L1."""
        self._evaluate(batch, dataloader_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """As validation, on the test split."""
        self._evaluate(batch, dataloader_idx, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor], dataloader_idx: int, stage: str) -> None:
        x, _ = batch  # (B, *shape of the loader's domain)
        there: Direction = ("AB", "BA")[dataloader_idx]
        back = self.generators[there[::-1]](self.generators[there](x))  # (B, *shape)
        name = f"{stage}/cycle_{there.lower()}{there[0].lower()}"  # cycle_aba, cycle_bab
        self.log(name, F.l1_loss(back, x), sync_dist=True, add_dataloader_idx=False)

    # ------------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Also store the history pools (module docstring)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[POOLS_KEY] = {domain: pool.state_dict() for domain, pool in self.pools.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take back the history pools."""
        super().on_load_checkpoint(checkpoint)
        for domain, state in checkpoint.get(POOLS_KEY, {}).items():
            self.pools[domain].load_state_dict(state)

    # ---------------------------------------------------------------------------------------- optimization
    def configure_optimizers(self):
        """One optimizer for both generators (index 0) and one for both discriminators (1), each with its
        optional scheduler; Lightning checkpoints them, the steps here step them."""
        g_factory, d_factory = self._optimizer_factories
        optimizers = [g_factory(trainable_parameters(self.generators, "the generators")),  # frozen ones left out
                      d_factory(trainable_parameters(self.discriminators, "the discriminators"))]  # fmt: skip
        interval = self.hparams.lr_scheduler_interval
        configs = [optimizer_config(opt, factory, interval)
                   for opt, factory in zip(optimizers, self._scheduler_factories, strict=True)]  # fmt: skip
        self._scheduler_slots = [config.get("lr_scheduler", {}).get("scheduler") for config in configs]
        return configs

    def _step_scheduler(self, index: int) -> None:
        if self.hparams.lr_scheduler_interval == "step" and self._scheduler_slots[index] is not None:
            self._scheduler_slots[index].step()

    def on_train_epoch_end(self) -> None:
        """Log the epoch means; step the LR schedulers when ``lr_scheduler_interval="epoch"``."""
        super().on_train_epoch_end()
        if self.hparams.lr_scheduler_interval == "epoch":
            for scheduler in self._scheduler_slots:
                if scheduler is not None:
                    scheduler.step()


@contextmanager
def _eval_mode(module: nn.Module):
    """Every sub-module in eval mode within the block; each one's own mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _check_options(shape_a, shape_b, weights: tuple[float, float, float], pool_size: int, interval: str):
    for name, shape in (("shape_a", shape_a), ("shape_b", shape_b)):
        if len(shape) != 3:
            raise ValueError(f"CycleGAN {name} must be an image shape (C, H, W), got {shape}")
    if min(weights) < 0 or pool_size < 0:
        raise ValueError(
            f"cycle_weight_a, cycle_weight_b, identity_weight and pool_size must be >= 0, got {weights} and {pool_size}"
        )
    identity_weight = weights[2]
    if identity_weight > 0 and shape_a[0] != shape_b[0]:
        raise ValueError(
            f"the identity loss needs domains with the same number of channels, but A has {shape_a[0]} and B "
            f"{shape_b[0]} (G_BA cannot read an A image); set --model.init_args.identity_weight 0"
        )
    if interval not in ("step", "epoch"):
        raise ValueError(f"lr_scheduler_interval must be 'step' or 'epoch', got {interval!r}")
