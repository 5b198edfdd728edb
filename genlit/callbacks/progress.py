"""genlit's default progress bar: Lightning's rich bar, redrawn a few times per second instead of every batch (in a
terminal), or Lightning's tqdm bar in a Jupyter kernel."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar


class ThrottledProgressBar(RichProgressBar):
    """``RichProgressBar`` that redraws during training at most ``refresh_rate`` times per second.

    Lightning's bar re-renders and converts every logged metric to a Python float after every training batch.
    On a 2-core CPU that measured 0.5-0.8 ms per batch (``benchmarks/gpt_throughput.py``-sized steps are
    about 40 ms), a cost a hand-written loop does not pay; a person cannot read more than a few redraws per
    second anyway. ``refresh_rate`` also sets how often rich's own display thread renders. The bar is always
    drawn for the first and last batch of an epoch; validation and test bars are Lightning's.

    The epoch's last batch is counted when the epoch starts: Lightning's ``total_train_batches`` is the number
    of steps still left under ``max_steps``, which shrinks during the epoch, so comparing each batch with it would
    redraw every batch of a run's second half.
    """

    def __init__(self, refresh_rate: int = 10, **kwargs) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._last_draw = float("-inf")
        self._epoch_batches: int | float = float("inf")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch's bar and note how many batches the epoch has."""
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_batches = self.total_train_batches

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Draw if the last draw is older than 1 / refresh_rate seconds (or at an epoch's edges)."""
        now = time.monotonic()
        edge = self.train_progress_bar_id is None or batch_idx + 1 >= self._epoch_batches
        if edge or now - self._last_draw >= 1.0 / self.refresh_rate:
            self._last_draw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        else:  # what Lightning's hook does besides drawing
            self.val_progress_bar_id = self.test_progress_bar_id = self.predict_progress_bar_id = None


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (a notebook), where rich's live display does not work."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and "ipykernel" in type(shell).__module__


def default_progress_bar() -> ProgressBar:
    """genlit's progress bar: :class:`ThrottledProgressBar` in a terminal; in a Jupyter kernel Lightning's tqdm
    bar (rich's live display recurses there), redrawn every 25 batches: a widget when ipywidgets is installed (the
    ``notebooks`` extra installs it), else plain text lines."""
    if in_jupyter_kernel():
        return TQDMProgressBar(refresh_rate=25)
    return ThrottledProgressBar()
