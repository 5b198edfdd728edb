"""InfoGAN: a GAN that learns interpretable codes without labels (Chen et al. 2016,
https://arxiv.org/abs/1606.03657).

G's input is noise z and latent codes c: one categorical code of ``num_categories`` values (given one-hot) and
``num_continuous`` continuous codes, each uniform on [-1, 1] (the paper's MNIST setting: 10 values, 2 codes, 62
noise variables), laid out as ``[z | one_hot(c1) | c2 ... cN]``, so G's ``latent_dim`` is the noise size plus
``num_categories + num_continuous``. Q(c | x) is an auxiliary head of the discriminator on D's shared body
(:class:`~genlit.nets.dcgan.DCGANDiscriminator` with ``aux_outputs``; the paper's MNIST Q: FC 128, batch norm,
LeakyReLU): logits of the categorical code and the means of the continuous codes, a factored Gaussian with
std 1 (fixed, as the paper's code for MNIST does) or, with ``learn_std``, a learned log-std per code.

The objective is ``min_{G,Q} max_D V(D, G) - lambda L_I(G, Q)`` (eq. 6): the information loss
(:func:`genlit.objectives.information.information_loss`: cross-entropy of c1, Gaussian NLL of the continuous
codes, weighted ``categorical_weight`` and ``continuous_weight``) on G's samples is added to D's loss in the
discriminator step (it trains Q's head and D's shared body, G fixed) and to G's loss in the generator step (it
trains G, D and Q fixed). Data labels are not used. Logged: ``info_categorical``, ``info_continuous``,
``code_accuracy`` (share of samples whose category Q recovers) and ``mi_categorical`` (the lower bound
``log K - CE`` in nats) in D's steps, ``g_adversarial`` and ``g_info`` in G's, ``val/code_accuracy`` on EMA samples.

Sampling fixes codes: ``genlit sample --category 3`` (every sample's c1 is 3) and ``--continuous [0.5,null]``
(c2 is 0.5, c3 stays random); sample i's noise and random codes depend only on (seed, i).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genlit.families.auxiliary_gan import AuxiliaryGAN
from genlit.families.base import ShapeNetFactory
from genlit.families.gan import GAN
from genlit.objectives.adversarial import discriminator_loss, generator_loss
from genlit.objectives.information import CodeLayout, LatentCodes, information_loss
from genlit.seeding import SampleRNG


class InfoGAN(AuxiliaryGAN):
    """Information maximizing GAN (Chen et al. 2016, https://arxiv.org/abs/1606.03657): G takes noise and latent
    codes, Q (a head on D's body) recovers the codes from G's samples; the objective is in the module docstring.

    Args:
        generator: factory of G, called as ``generator(data_shape, 0)``; its ``latent_dim`` is the noise size plus
            ``num_categories + num_continuous`` (the paper's MNIST G: 62 + 10 + 2 = 74).
        discriminator: factory of D, called as ``discriminator(data_shape, 0, aux_outputs=n)`` with Q's ``n``
            outputs (:class:`~genlit.nets.dcgan.DCGANDiscriminator`; ``aux_hidden: 128`` is the paper's Q).
        data_shape: shape of one sample, linked from the DataModule by the CLI.
        num_classes: classes of the data, linked from the DataModule; unused (InfoGAN ignores labels).
        conditional: InfoGAN is unconditional; true is an error (kept so checkpoints rebuild).
        num_categories: values of the categorical code c1 (the paper's MNIST: 10), at least 2.
        num_continuous: number of continuous codes, each uniform on [-1, 1] (the paper's MNIST: 2).
        learn_std: Q predicts a log-std per continuous code; false: std 1 (the paper's code for MNIST).
        categorical_weight: lambda of the categorical code's cross-entropy (the paper: 1).
        continuous_weight: lambda of the continuous codes' Gaussian NLL. The paper uses 1 for MNIST's std-1 Q
            (the NLL is then a squared error halved); a smaller one (0.1) is common with a learned std.
        gan_options: the other options of :class:`~genlit.families.gan.GAN` (loss, optimizers, EMA, penalties...).
    """

    metric_panels = {
        **GAN.metric_panels,
        "InfoGAN: Q's losses on G's codes": ("info_categorical", "info_continuous", "g_info"),
        "InfoGAN: Q recovers the category (share)": ("code_accuracy",),
    }

    def __init__(
        self,
        generator: ShapeNetFactory,
        discriminator: ShapeNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        num_categories: int = 10,
        num_continuous: int = 2,
        learn_std: bool = False,
        categorical_weight: float = 1.0,
        continuous_weight: float = 1.0,
        **gan_options: Any,
    ) -> None:
        _check_options(conditional, num_categories, num_continuous, categorical_weight, continuous_weight)
        super().__init__(generator, discriminator, data_shape, num_classes, False, **gan_options)
        latent_dim, codes = self.generator.latent_dim, self.layout.input_dim
        if latent_dim <= codes:
            raise ValueError(
                f"the generator's latent_dim {latent_dim} leaves no noise beside InfoGAN's {codes} code inputs "
                f"({num_categories} categories + {num_continuous} continuous); set latent_dim to {codes + 62} "
                "(the paper's 62 noise variables)"
            )
        self.noise_dim = latent_dim - codes

    @property
    def layout(self) -> CodeLayout:
        """How the codes are laid out in G's input and Q's outputs (from the hyperparameters)."""
        hp = self.hparams
        return CodeLayout(hp.num_categories, hp.num_continuous, hp.learn_std)

    def aux_outputs(self) -> int:
        """Q's outputs: category logits, continuous means (and log-stds when learned)."""
        return self.layout.q_outputs

    # ------------------------------------------------------------------------------------------------ codes
    def random_codes(self, num: int, generator: torch.Generator | None = None) -> LatentCodes:
        """Codes from their prior on the module's device: c1 uniform over the categories (num,), the continuous
        codes uniform on [-1, 1] (num, num_continuous)."""
        layout = self.layout
        category = torch.randint(layout.num_categories, (num,), generator=generator, device=self.device)
        continuous = torch.rand(num, layout.num_continuous, generator=generator, device=self.device) * 2 - 1
        return LatentCodes(category, continuous)

    def generator_input(self, z: Tensor, codes: LatentCodes) -> Tensor:
        """G's input (B, latent_dim): noise ``z`` (B, noise_dim), c1 one-hot (B, K), the continuous codes (B, N)."""
        one_hot = F.one_hot(codes.category, self.layout.num_categories).to(z.dtype)  # (B, K)
        return torch.cat([z, one_hot, codes.continuous.to(z.dtype)], dim=1)  # (B, latent_dim)

    def noise(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """G's whole input (num, latent_dim): noise z ~ N(0, I) and codes drawn from their prior."""
        z = torch.randn(num, self.noise_dim, generator=generator, device=self.device)  # (num, noise_dim)
        return self.generator_input(z, self.random_codes(num, generator))

    def _fake(self, num: int, labels: Tensor | None) -> tuple[Tensor, LatentCodes]:
        """A training batch of G's samples (num, *data_shape) and the codes they were drawn with."""
        codes = self.random_codes(num)
        z = torch.randn(num, self.noise_dim, device=self.device)  # (num, noise_dim)
        return self.generator(self.generator_input(z, codes)), codes

    # ------------------------------------------------------------------------------------------- training
    def _info_loss(self, q: Tensor, codes: LatentCodes) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        return information_loss(q, codes, self.layout, hp.categorical_weight, hp.continuous_weight)

    def _discriminator_loss(self, real: Tensor, fake: Tensor, labels: Tensor | None, codes: LatentCodes):
        """The adversarial loss plus the information loss of Q on G's batch (Q and D's body learn it); D's
        outputs on ``real`` (B,); the stats."""
        real_out = self._judge(real, None)  # (B,)
        fake_out, q = self._judge_heads(fake)  # (B,), (B, q_outputs)
        info, terms = self._info_loss(q, codes)
        loss = discriminator_loss(self.hparams.loss, real_out, fake_out) + info
        return loss, real_out, {"d_real": real_out.mean(), "d_fake": fake_out.mean(), **terms}

    def _generator_loss(self, fake: Tensor, labels: Tensor | None, codes: LatentCodes) -> tuple[Tensor, dict]:
        """The adversarial loss plus the information loss of G's batch under Q (G learns to make codes legible)."""
        fake_out, q = self._judge_heads(fake)  # (B,), (B, q_outputs)
        adversarial = generator_loss(self.hparams.loss, fake_out)
        info, _ = self._info_loss(q, codes)
        loss = adversarial + info
        return loss, {"g_loss": loss, "g_adversarial": adversarial, "g_info": info}

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        """The GAN's validation figures, and how well Q recovers the codes of EMA samples (``code_accuracy``)."""
        super()._evaluate(batch, stage)
        num = batch[0].shape[0]
        codes = self.random_codes(num)
        with self.ema_weights():
            fake = self.generator(self.generator_input(torch.randn(num, self.noise_dim, device=self.device), codes))
        _, terms = self._info_loss(self.discriminator.heads(fake)[1], codes)
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, sync_dist=True)

    # ------------------------------------------------------------------------------------------- sampling
    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        category: int | None = None,
        continuous: Sequence[float | None] | None = None,
    ) -> Tensor:
        """``num`` samples G(z, c) (num, *data_shape); z, c1 and the continuous codes per sample from ``rng``
        (drawn whether fixed or not, so fixing a code changes nothing else).

        Args:
            category: the categorical code of every sample, in [0, num_categories); None: random.
            continuous: one value per continuous code for every sample (trained on [-1, 1]), null/None leaves that
                code random (``--continuous [0.5,null]``); None: all random.
        """
        layout = self.layout
        z = rng.randn(self.noise_dim)  # (num, noise_dim)
        category_draw = (rng.rand(1)[:, 0] * layout.num_categories).long()  # (num,)
        values = rng.rand(layout.num_continuous) * 2 - 1  # (num, N)
        if category is not None:
            category_draw.fill_(category)
        for index, value in enumerate(continuous or ()):
            if value is not None:
                values[:, index] = value
        codes = LatentCodes(category_draw.clamp_(max=layout.num_categories - 1), values)
        return self.generator(self.generator_input(z, codes))  # (num, *data_shape)

    def validate_sample_options(self, category: int | None = None, continuous=None, **options) -> None:
        """``category`` in [0, num_categories); ``continuous`` one finite value or None per continuous code."""
        layout = self.layout
        if category is not None and not (isinstance(category, int) and 0 <= category < layout.num_categories):
            raise ValueError(
                f"category must be an integer in [0, {layout.num_categories}) (a value of the categorical code), "
                f"got {category!r}"
            )
        if continuous is None:
            return
        values = list(continuous) if isinstance(continuous, Sequence) and not isinstance(continuous, str) else None
        if values is None or len(values) != layout.num_continuous or not all(_finite_or_none(v) for v in values):
            raise ValueError(
                f"continuous must be {layout.num_continuous} values, one per continuous code (a number, or null to "
                f"leave that code random; trained on [-1, 1]), e.g. [0.5, null]; got {continuous!r}"
            )


def _finite_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _check_options(conditional: bool, categories: int, continuous: int, cat_weight: float, cont_weight: float):
    if conditional:
        raise ValueError(
            "InfoGAN is unconditional (its categorical code takes the labels' place): leave conditional false"
        )
    if categories < 2 or continuous < 0:
        raise ValueError(
            f"InfoGAN needs num_categories >= 2 and num_continuous >= 0 (the paper: 10 and 2), got "
            f"{categories} and {continuous}"
        )
    if cat_weight < 0 or cont_weight < 0:
        raise ValueError(f"categorical_weight and continuous_weight must be >= 0, got {cat_weight}, {cont_weight}")
