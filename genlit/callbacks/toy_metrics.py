"""Log mode coverage of a generator trained on a 2-D Gaussian mixture (:class:`ToyDataModule`)."""

from __future__ import annotations

import lightning as L
import torch

from genlit.families.protocols import Generative
from genlit.metrics.toy import ModeCoverage
from genlit.seeding import rank_range


class ToyModeMetrics(L.Callback):
    """At the end of every validation epoch, sample the model and log the mode-collapse statistics.

    Logs ``val/modes_covered``, ``val/high_quality_fraction`` and ``val/kl_mode_histogram`` (definitions
    in :mod:`genlit.metrics.toy`) against ``trainer.datamodule.centers`` and ``.std``. Skipped during
    the sanity check. The samples are 0..num_samples-1 under ``seed`` (per-sample seeding), the same every
    epoch, so epochs are compared on the same noise; under DDP each rank draws a disjoint range of them and
    the :class:`ModeCoverage` metric sums the counts across ranks, so the logged numbers are those of one
    process drawing all ``num_samples``. A conditional model draws the balanced labels ``i % num_classes``
    (the data's modes are equally likely).

    Args:
        num_samples: samples per evaluation, summed over ranks (VEEGAN and PacGAN use 2,500).
        seed: base seed of the sampling generator.
    """

    def __init__(self, num_samples: int = 2500, seed: int = 0) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check that the module samples and that the datamodule describes the mixture (``centers``, ``std``),
        for the stages that validate."""
        if stage not in ("fit", "validate"):
            return
        if not isinstance(pl_module, Generative):
            raise ValueError(f"ToyModeMetrics needs a generative family, got {type(pl_module).__name__}")
        datamodule = getattr(trainer, "datamodule", None)
        if not (hasattr(datamodule, "centers") and hasattr(datamodule, "std")):
            raise ValueError(
                "ToyModeMetrics needs a ToyDataModule (a datamodule with `centers` and `std`); "
                f"got {type(datamodule).__name__}. Pass datamodule=ToyDataModule(...) to the Trainer call"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Generative) -> None:
        """Sample, count high-quality samples per mode across ranks and log the statistics."""
        if trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        start, stop = rank_range(self.num_samples, trainer.global_rank, trainer.world_size)
        metric = ModeCoverage(datamodule.centers, datamodule.std).to(pl_module.device)
        if stop > start:
            samples = pl_module.sample_many(range(start, stop), seed=self.seed, batch_size=stop - start)
            if samples.shape != (stop - start, 2):
                raise ValueError(
                    f"{type(pl_module).__name__} samples have shape {tuple(samples.shape[1:])}; "
                    "ToyModeMetrics expects 2-D points"
                )
        else:  # more ranks than samples: this rank contributes nothing but still joins the sync
            samples = torch.empty(0, 2, device=pl_module.device)
        metric.update(samples)
        # compute() all-reduces the counts, so every rank holds the same numbers; sync_dist=True only
        # averages identical values (and keeps Lightning from warning about epoch-level logging).
        for name, value in metric.compute().items():
            pl_module.log(f"val/{name}", float(value), sync_dist=True)
