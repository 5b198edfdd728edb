"""ACGAN: a class-conditional GAN whose discriminator also classifies (Odena et al. 2017,
https://arxiv.org/abs/1610.09585).

G draws an image of a given class (the class embedding and conditional batch norm of the conditional DCGAN
generator, see :mod:`genlit.nets.dcgan`); D has no projection term but an auxiliary classifier head beside its
adversarial output, on the same features. With the adversarial loss ``L_S`` and the class log-likelihood
``L_C = E log P(C = c | X_real) + E log P(C = c | X_fake)`` (eq. 2-3), D maximises ``L_S + L_C`` and G maximises
``L_C - L_S``. Here, as cross-entropies (:func:`genlit.objectives.information.class_loss`):

- D step: ``d_loss = adversarial + class_weight * (CE(D_cls(x_real), y) + CE(D_cls(G(z, y)), y))``; the fake term
  is the paper's and can be dropped (``fake_class_loss: false``), as some implementations do;
- G step: ``g_loss = adversarial + class_weight * CE(D_cls(G(z, y)), y)``.

G's labels ``y`` are the training batch's labels (the data's class frequencies). Logged: ``class_loss_real``,
``class_loss_fake`` and ``class_accuracy_real`` / ``class_accuracy_fake`` (the auxiliary classifier's accuracy on
real images and on G's images for their requested class) in D's steps, ``g_adversarial`` and ``g_class_loss`` in
G's, and ``val/class_accuracy_real`` on held-out data.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from genlit.families.auxiliary_gan import AuxiliaryGAN
from genlit.families.base import ShapeNetFactory
from genlit.families.gan import GAN
from genlit.objectives.adversarial import discriminator_loss, generator_loss
from genlit.objectives.information import class_loss


class ACGAN(AuxiliaryGAN):
    """Auxiliary classifier GAN (Odena et al. 2017, https://arxiv.org/abs/1610.09585): a class-conditional G and a D
    whose auxiliary head classifies real and generated images; the losses are in the module docstring.

    Args:
        generator: factory of G, called as ``generator(data_shape, num_classes)``: a class-conditional G(z, y).
        discriminator: factory of D, called as ``discriminator(data_shape, 0, aux_outputs=num_classes)``: no
            projection term, an auxiliary head of class logits (:class:`~genlit.nets.dcgan.DCGANDiscriminator`).
        data_shape: shape of one sample, linked from the DataModule by the CLI.
        num_classes: number of classes of the data (at least 2), linked from the DataModule by the CLI.
        conditional: ACGAN is class-conditional; false is an error (kept so checkpoints rebuild).
        class_weight: weight of the auxiliary classifier's cross-entropies in both steps (the paper: 1).
        fake_class_loss: D also learns to classify G's images by their requested class (the paper); false: D's
            classifier learns from real images only.
        gan_options: the other options of :class:`~genlit.families.gan.GAN` (loss, optimizers, EMA, penalties...).
    """

    metric_panels = {
        **GAN.metric_panels,
        "Auxiliary classifier: cross-entropy": ("class_loss_real", "class_loss_fake", "g_class_loss"),
        "Auxiliary classifier: accuracy": ("class_accuracy_real", "class_accuracy_fake"),
    }

    def __init__(
        self,
        generator: ShapeNetFactory,
        discriminator: ShapeNetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = True,
        class_weight: float = 1.0,
        fake_class_loss: bool = True,
        **gan_options: Any,
    ) -> None:
        _check_options(num_classes, conditional, class_weight)
        super().__init__(generator, discriminator, data_shape, num_classes, True, **gan_options)

    def aux_outputs(self) -> int:
        """D's auxiliary head: one logit per class."""
        return self.num_classes

    def _discriminator_loss(self, real: Tensor, fake: Tensor, labels: Tensor, codes: Any):
        """The adversarial loss plus the auxiliary classifier's cross-entropies on real (true labels) and fake
        (requested labels) images; D's outputs on ``real`` (B,); the stats."""
        hp = self.hparams
        real_out, real_logits = self._judge_heads(real)  # (B,), (B, K)
        fake_out, fake_logits = self._judge_heads(fake)  # (B,), (B, K)
        stats = {"d_real": real_out.mean(), "d_fake": fake_out.mean()}
        stats |= _class_stats("real", real_logits, labels) | _class_stats("fake", fake_logits, labels)
        classes = stats["class_loss_real"] + (stats["class_loss_fake"] if hp.fake_class_loss else 0.0)
        loss = discriminator_loss(hp.loss, real_out, fake_out) + hp.class_weight * classes
        return loss, real_out, stats

    def _generator_loss(self, fake: Tensor, labels: Tensor, codes: Any) -> tuple[Tensor, dict]:
        """The adversarial loss plus the cross-entropy of the auxiliary classifier for the requested labels."""
        fake_out, fake_logits = self._judge_heads(fake)  # (B,), (B, K)
        adversarial = generator_loss(self.hparams.loss, fake_out)
        classes = class_loss(fake_logits, labels)
        loss = adversarial + self.hparams.class_weight * classes
        return loss, {"g_loss": loss, "g_adversarial": adversarial, "g_class_loss": classes}

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        """The GAN's validation figures, and the auxiliary classifier's accuracy on held-out real images."""
        super()._evaluate(batch, stage)
        real, y = batch
        _, logits = self.discriminator.heads(real)  # (B, K)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}/class_accuracy_real", accuracy, sync_dist=True)


def _class_stats(which: str, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """The auxiliary classifier's cross-entropy and accuracy on a batch of ``which`` images (real or fake)."""
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return {f"class_loss_{which}": class_loss(logits, labels), f"class_accuracy_{which}": accuracy}


def _check_options(num_classes: int, conditional: bool, class_weight: float) -> None:
    if num_classes < 2:
        raise ValueError(
            f"ACGAN needs labelled data with at least 2 classes (its discriminator learns to classify them), but the "
            f"DataModule reports {num_classes}; set --data.label_column (and --data.num_classes), or use GAN"
        )
    if not conditional:
        raise ValueError("ACGAN is class-conditional: leave conditional true (for an unconditional model use GAN)")
    if class_weight < 0:
        raise ValueError(f"class_weight must be >= 0 (the paper: 1), got {class_weight}")
