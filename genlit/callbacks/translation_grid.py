"""TranslationGrid: save and log pictures of a translator's work on fixed inputs, both ways, during training.

For any module offering :class:`~genlit.families.protocols.Translator` (CycleGAN) and a DataModule offering
``examples(num)`` (:class:`~genlit.data.unpaired.UnpairedImageDataModule`). The picture of one direction has three
rows: the inputs, their translations and the translations translated back (the cycle's reconstructions).
:func:`translation_picture` is the one home of that picture (``genlit translate`` draws its PNG with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from genlit.callbacks.loggers import log_picture
from genlit.callbacks.sample_grid import PeriodicPicture
from genlit.families.protocols import Translator
from genlit.imaging import image_grid, save_png, to_uint8


@runtime_checkable
class HeldExamples(Protocol):
    """A DataModule that lends fixed example images of each domain: ``{"A": (n, ...), "B": (n, ...)}`` in [-1, 1]."""

    def examples(self, num: int) -> dict[str, Tensor]: ...


def translation_picture(*rows: Tensor) -> np.ndarray:
    """One row per batch of images (each (n, C, H, W) in [-1, 1], as many per row): inputs, translations, ...;
    grey rows are shown in colour when another row has colour. A uint8 picture (H', W', C)."""
    channels = max(row.shape[1] for row in rows)
    shown = [row.expand(-1, channels, -1, -1) if row.shape[1] == 1 else row for row in rows]  # each (n, C, H, W)
    return image_grid(to_uint8(torch.cat(shown)), nrow=len(rows[0]))


class TranslationGrid(PeriodicPicture):
    """Save ``<run_dir>/samples/translate_{AB,BA}_step_{global_step:07d}.png`` and log them as ``translate_AB`` and
    ``translate_BA``, every ``every_n_steps`` optimizer steps and when training ends (global rank zero).

    Each picture shows the same ``num_images`` validation inputs of its source domain (the DataModule's
    ``examples``), their translations and reconstructions, so successive pictures show how the model evolves.

    Args:
        num_images: inputs per picture (its columns).
        every_n_steps: period in optimizer steps (``trainer.global_step``).
    """

    def __init__(self, num_images: int = 10, every_n_steps: int = 500) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1; got {num_images}")
        super().__init__(every_n_steps)
        self.num_images = num_images

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check before fitting that the module translates and the DataModule lends examples."""
        if stage != "fit":
            return
        if not isinstance(pl_module, Translator):
            raise ValueError(f"TranslationGrid needs a module with translate(x, direction) (CycleGAN); got "
                             f"{type(pl_module).__name__}")  # fmt: skip
        if not isinstance(trainer.datamodule, HeldExamples):
            raise ValueError(f"TranslationGrid needs a DataModule with examples(num) (UnpairedImageDataModule); got "
                             f"{type(trainer.datamodule).__name__}")  # fmt: skip

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Translate the fixed inputs both ways and back, save the PNGs and log them (rank zero)."""
        if not trainer.is_global_zero:
            return
        examples = trainer.datamodule.examples(self.num_images)
        run_dir = self._run_dir or Path(trainer.default_root_dir)
        for direction in ("AB", "BA"):
            inputs = examples[direction[0]].to(pl_module.device)  # (n, *shape of the source domain)
            there = pl_module.translate(inputs, direction)  # (n, *shape of the other domain)
            back = pl_module.translate(there, direction[::-1])  # (n, *shape of the source domain)
            picture = translation_picture(inputs, there, back)
            name = f"translate_{direction}_step_{trainer.global_step:07d}.png"
            self.saved.append(save_png(picture, run_dir / "samples" / name))
            log_picture(trainer, f"translate_{direction}", picture)
