"""Sending pictures and texts to whichever loggers a run has: the one home for "which logger is this?".

W&B and TensorBoard get pictures and texts in their own formats; loggers without such media (CSV) get nothing.
Scalars go through ``LightningModule.log`` as usual.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger


def logger_step(trainer: pl.Trainer) -> int:
    """The step Lightning gives loggers for scalar metrics (batches that stepped), so pictures line up.

    It equals ``global_step`` for one optimizer without accumulation; a GAN's ``global_step`` is larger.
    """
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))


def log_picture(trainer: pl.Trainer, key: str, picture: np.ndarray, step: int | None = None) -> None:
    """Send a uint8 picture (H, W, C) to the trainer's loggers (global rank zero only).

    W&B gets ``log_image(key=key, images=[picture], step=step)``; TensorBoard gets
    ``experiment.add_image(key, (C, H, W) tensor, step)``. ``step`` defaults to :func:`logger_step`, the x-axis
    of the scalar metrics.
    """
    if not trainer.is_global_zero:
        return
    step = logger_step(trainer) if step is None else step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[picture], step=step)
        elif isinstance(logger, TensorBoardLogger):
            chw = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)  # (C, H, W) uint8
            logger.experiment.add_image(key, chw, step)


def log_texts(trainer: pl.Trainer, key: str, texts: list[str], step: int | None = None) -> None:
    """Send texts to the trainer's loggers (global rank zero only): a W&B table of (step, text) rows, one
    TensorBoard text entry with the texts separated by rules."""
    if not trainer.is_global_zero:
        return
    step = logger_step(trainer) if step is None else step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_text(key, columns=["step", "text"], data=[[step, t] for t in texts], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, "\n\n---\n\n".join(texts), step)
