"""SampleGrid: save and log a picture of fixed-noise samples during training.

Also the home of small helpers other callbacks reuse: :class:`StepCrossing` (fire when ``global_step``
passes a multiple of N, robust to GANs advancing it by 2+ per batch), :class:`PeriodicPicture` and
:func:`fixed_noise_samples`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from genlit.callbacks.loggers import log_picture
from genlit.families.protocols import DataShaped, Generative
from genlit.imaging import samples_picture, save_png
from genlit.seeding import SampleRNG


class StepCrossing:
    """Decide when a periodic action is due: once each time ``global_step`` crosses a multiple of ``every``.

    ``global_step`` counts optimizer steps, so with manual optimization (a GAN's D and G steps) it moves by
    2 or more per batch and ``global_step % every == 0`` may never hold; comparing ``step // every`` with
    the value at the last firing does not miss a multiple.
    """

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every_n_steps must be >= 1; got {every}")
        self.every = every
        self.last_fired: int | None = None
        self._period = 0

    def reset(self, step: int) -> None:
        """Start counting from ``step`` (the start of training, or the step a run resumes from)."""
        self._period = step // self.every
        self.last_fired = None

    def crossed(self, step: int) -> bool:
        """Return True (and remember it) if ``step`` is in a later period than the last firing."""
        if step // self.every > self._period:
            self._period = step // self.every
            self.last_fired = step
            return True
        return False

    def final(self, step: int) -> bool:
        """Return True at the end of training unless the action already ran at this very ``step``."""
        if self.last_fired == step:
            return False
        self.last_fired = step
        return True


def fixed_noise_samples(pl_module: Generative, num_samples: int, seed: int, **sample_kwargs) -> Any:
    """The module's samples 0..num_samples-1 under ``seed``: the same noise (and, for a conditional module, the
    balanced labels ``i % num_classes``) every call. ``sample_kwargs`` go to ``sample`` (e.g. ``use_ema=False``).
    """
    rng = SampleRNG(range(num_samples), seed, pl_module.device)
    return pl_module.sample(num_samples, generator=rng, **sample_kwargs)


class PeriodicPicture(Callback):
    """Base of the picture callbacks: ``_draw`` runs whenever ``trainer.global_step`` crosses a multiple of
    ``every_n_steps`` (:class:`StepCrossing`) and once when training ends; ``_run_dir`` is the run folder,
    resolved on every rank in ``on_train_start`` (``trainer.log_dir`` broadcasts)."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._trigger = StepCrossing(every_n_steps)
        self._run_dir: Path | None = None
        self.saved: list[Path] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve the run folder (all ranks) and start counting steps."""
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self._trigger.reset(trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Draw if ``global_step`` crossed a multiple of ``every_n_steps`` during this batch."""
        if self._trigger.crossed(trainer.global_step):
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw a last picture unless one was just drawn at this step."""
        if self._trigger.final(trainer.global_step):
            self._draw(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError


class SampleGrid(PeriodicPicture):
    """Save ``<run_dir>/samples/step_{global_step:07d}.png`` of fixed-noise samples and log it.

    Every ``every_n_steps`` optimizer steps (crossing logic, see :class:`StepCrossing`) and once when
    training ends, the module draws samples 0..num_samples-1 under ``seed`` (:func:`fixed_noise_samples`), so
    every picture uses the same noise and shows how the model evolves. Conditional modules draw the balanced
    labels ``i % num_classes`` and, unless ``nrow`` is given, put ``num_classes`` images per row, so each
    column is one class. Images become a
    grid, 2-D toy data a scatter (with ``trainer.datamodule.centers`` when the data module has them).
    ``run_dir`` is ``trainer.log_dir`` (or ``default_root_dir``). Sampling, writing and logging happen on
    global rank zero only.

    Args:
        num_samples: how many samples per picture.
        every_n_steps: period in optimizer steps (``trainer.global_step``).
        seed: seed of the fixed noise.
        nrow: images per row of the grid; default square-ish (or ``num_classes`` when conditional).
    """

    def __init__(self, num_samples: int = 64, every_n_steps: int = 500, seed: int = 0, nrow: int | None = None) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        super().__init__(every_n_steps)
        self.num_samples = num_samples
        self.seed = seed
        self.nrow = nrow

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check before fitting that the module can be drawn: a generative family with (C, H, W) or (2,) data."""
        if stage != "fit":
            return
        shape = tuple(pl_module.data_shape) if isinstance(pl_module, DataShaped) else ()
        if not isinstance(pl_module, Generative) or not (len(shape) == 3 or shape == (2,)):
            raise ValueError(
                f"SampleGrid needs a generative family with data_shape (C, H, W) or (2,); "
                f"got {type(pl_module).__name__} with data_shape {shape or None}"
            )

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Sample on fixed noise, save the PNG and log it (rank zero)."""
        if not trainer.is_global_zero:
            return
        samples = fixed_noise_samples(pl_module, self.num_samples, self.seed)
        nrow = self.nrow
        if nrow is None and pl_module.conditional:
            nrow = pl_module.num_classes
        centers = getattr(trainer.datamodule, "centers", None) if trainer.datamodule is not None else None
        picture = samples_picture(samples, nrow=nrow, centers=centers)
        run_dir = self._run_dir or Path(trainer.default_root_dir)
        self.saved.append(save_png(picture, run_dir / "samples" / f"step_{trainer.global_step:07d}.png"))
        log_picture(trainer, "samples", picture)
