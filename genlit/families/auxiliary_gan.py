"""What GANs whose discriminator has an auxiliary head share (ACGAN, InfoGAN): building D with the head, and
reading both of D's outputs from one pass.

The head lives inside the discriminator module (it shares D's body), so D's optimizer steps it and the GAN
family's DDP sync of the discriminator step (:func:`genlit.families.manual_steps.backward_synced`) averages its
gradients with the rest of D; in the generator step it is frozen with D.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from genlit.families.base import ShapeNetFactory
from genlit.families.gan import GAN


@runtime_checkable
class AuxiliaryDiscriminator(Protocol):
    """A discriminator with an auxiliary head of ``aux_outputs`` outputs beside its adversarial output
    (:class:`genlit.nets.dcgan.DCGANDiscriminator` built with ``aux_outputs``)."""

    aux_outputs: int

    def heads(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]: ...


class AuxiliaryGAN(GAN):
    """A :class:`~genlit.families.gan.GAN` whose D also predicts something about its input from the same features.

    Subclasses say how many outputs the head has (:meth:`aux_outputs`); the factory of D is then called as
    ``discriminator(data_shape, 0, aux_outputs=n)``: no projection term, an auxiliary head of ``n`` outputs.
    """

    def aux_outputs(self) -> int:
        """How many outputs D's auxiliary head has (read while D is built, from the hyperparameters)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many auxiliary outputs D has")

    def _build_discriminator(self, factory: ShapeNetFactory, num_classes: int) -> nn.Module:
        """D with an auxiliary head of :meth:`aux_outputs` outputs and no projection term; one clear error for a
        net that has no such head."""
        try:
            net = factory(self.data_shape, 0, aux_outputs=self.aux_outputs())
        except TypeError as err:
            if "aux_outputs" not in str(err):
                raise
            net = None
        if not isinstance(net, AuxiliaryDiscriminator):
            what = type(net).__name__ if net is not None else _factory_name(factory)
            raise ValueError(
                f"{type(self).__name__} needs a discriminator with an auxiliary head (aux_outputs and heads()), "
                f"such as genlit.nets.dcgan.DCGANDiscriminator; {what} has none"
            )
        return net

    def _judge_heads(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """D's adversarial outputs (B,) and auxiliary outputs (B, aux_outputs) on ``images`` as D sees them
        (through the augmentation policy, if any), from one pass."""
        return self.discriminator.heads(images if self.augment is None else self.augment(images))


def _factory_name(factory) -> str:
    """The class a net factory builds (a class, a ``functools.partial`` of one, or any callable), for messages."""
    target = getattr(factory, "func", factory)
    return getattr(target, "__name__", type(target).__name__)
