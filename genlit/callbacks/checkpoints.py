"""Checkpoints a killed run can resume from: written atomically, and every few minutes of training.

:class:`TimedCheckpoint` writes a checkpoint every ``minutes`` of training (Lightning's
``train_time_interval``), so a kill loses minutes, not an epoch. :class:`AtomicCheckpointIO` writes every
checkpoint beside its target and moves it into place (:func:`genlit.files.atomic_write`), so a kill during a
write leaves the previous ``last.ckpt`` whole; ``genlit fit`` installs it unless the config names a
checkpoint plugin. (Lightning's own writer stages the file in the system's temporary folder, which on a
cluster is often another file system, where the final move is a copy that a kill can cut short.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from genlit.files import atomic_write


class TimedCheckpoint(ModelCheckpoint):
    """``timed-step=<N>.ckpt`` every ``minutes`` of training, replacing the previous one (``--ckpt_path last``
    resumes from the newest checkpoint of a run, whichever callback wrote it). It has its own file name, as two
    callbacks saving ``last.ckpt`` would make Lightning version one of them (``last-v1.ckpt``).

    Args:
        minutes: training time between checkpoints.
        dirpath: the checkpoints folder (``genlit fit`` points it at the run's ``checkpoints/``).
    """

    def __init__(self, minutes: float = 10.0, dirpath: str | None = None) -> None:
        if minutes <= 0:
            raise ValueError(f"TimedCheckpoint minutes must be > 0, got {minutes}")
        interval = timedelta(minutes=minutes)
        super().__init__(dirpath=dirpath, filename="timed-{step}", save_top_k=1, train_time_interval=interval)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing each file atomically in its own folder (local paths)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """``torch.save`` into a temporary file beside ``path``, then move it into place."""
        if "://" in str(path):  # remote storage: Lightning's fsspec writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)
