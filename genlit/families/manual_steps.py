"""Stepping one part of a LightningModule at a time under manual optimization, correctly under DDP.

Families that train several networks against each other with separate optimizers (the GAN family's G and D,
CycleGAN's two generators and two discriminators) step one part per backward. Lightning wraps the whole module in
one DDP, whose reducer would all-reduce every parameter at every backward and insist that each backward reach them
all. So each step here:

1. freezes the parts it does not train (:func:`frozen`: no gradients computed for them, none synced);
2. runs ``manual_backward`` under DDP's ``no_sync`` (:func:`backward_synced`), then one
   :func:`~genlit.optim.synchronize_step` that averages the stepped part's gradients over the ranks, copies rank 0's
   floating buffers and combines the ranks' finiteness checks: one collective per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from genlit.optim import synchronize_step


@contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Within the block ``net``'s parameters need no gradient (while another part trains); their flags are
    restored afterwards."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def backward_synced(module: L.LightningModule, loss: Tensor, net: nn.Module) -> bool:
    """``module.manual_backward(loss)`` without DDP's all-reduce, then one all-reduce of ``net``'s gradients
    (the part about to step); whether ``loss`` was finite on every rank."""
    model = module.trainer.model
    with model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext():
        module.manual_backward(loss)
    return synchronize_step(net, bool(torch.isfinite(loss.detach())))
