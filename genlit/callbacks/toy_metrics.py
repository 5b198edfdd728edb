"""Log mode coverage of a generator trained on a 2-D Gaussian mixture (:class:`ToyDataModule`)."""

from __future__ import annotations

import lightning as L
import torch

from genlit.metrics.toy import ModeCoverage


def rank_share(num_samples: int, rank: int, world_size: int) -> int:
    """Samples that ``rank`` draws so that the ranks together draw exactly ``num_samples``."""
    return num_samples // world_size + (1 if rank < num_samples % world_size else 0)


class ToyModeMetrics(L.Callback):
    """At the end of every validation epoch, sample the model and log the mode-collapse statistics.

    Logs ``val/modes_covered``, ``val/high_quality_fraction`` and ``val/kl_mode_histogram`` (definitions
    in :mod:`genlit.metrics.toy`) against ``trainer.datamodule.centers`` and ``.std``. Skipped during
    the sanity check. Under DDP each rank draws its share of ``num_samples`` with seed
    ``seed + global_rank``, and the :class:`ModeCoverage` metric sums the counts across ranks, so the
    logged numbers cover exactly ``num_samples`` samples. The seed is the same every epoch, so epochs
    are compared on the same noise. For a conditional model the labels are drawn uniformly over modes
    from the same generator (the data's modes are equally likely).

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
        """Check that the datamodule describes the mixture (``centers`` and ``std``)."""
        datamodule = getattr(trainer, "datamodule", None)
        if not (hasattr(datamodule, "centers") and hasattr(datamodule, "std")):
            raise ValueError(
                "ToyModeMetrics needs a ToyDataModule (a datamodule with `centers` and `std`); "
                f"got {type(datamodule).__name__}. Pass datamodule=ToyDataModule(...) to the Trainer call"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Sample, count high-quality samples per mode across ranks and log the statistics."""
        if trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        num = rank_share(self.num_samples, trainer.global_rank, trainer.world_size)
        metric = ModeCoverage(datamodule.centers, datamodule.std).to(pl_module.device)
        if num > 0:
            samples = self._draw(pl_module, num, seed=self.seed + trainer.global_rank)  # (num, 2)
        else:  # more ranks than samples: this rank contributes nothing but still joins the sync
            samples = torch.empty(0, 2, device=pl_module.device)
        metric.update(samples)
        # compute() all-reduces the counts, so every rank holds the same numbers; sync_dist=True only
        # averages identical values (and keeps Lightning from warning about epoch-level logging).
        for name, value in metric.compute().items():
            pl_module.log(f"val/{name}", float(value), sync_dist=True)

    @staticmethod
    def _draw(pl_module: L.LightningModule, num: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=pl_module.device).manual_seed(seed)
        labels = None
        if getattr(pl_module, "conditional", False):
            num_classes = int(pl_module.num_classes)
            labels = torch.randint(num_classes, (num,), generator=generator, device=pl_module.device)
        with torch.no_grad():
            samples = pl_module.sample(num, labels=labels, generator=generator)  # (num, 2)
        if samples.shape != (num, 2):
            raise ValueError(
                f"{type(pl_module).__name__}.sample({num}) returned shape {tuple(samples.shape)}; "
                f"ToyModeMetrics expects ({num}, 2)"
            )
        return samples
