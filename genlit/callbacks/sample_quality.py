"""FID, KID and precision/recall of a generative module's samples during training (``val/fid`` etc.)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from genlit.families.protocols import DataShaped, Generative
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor
from genlit.metrics.features import FeatureExtractor, extract
from genlit.metrics.fidelity import SampleQuality
from genlit.seeding import rank_range


class SampleQualityMonitor(Callback):
    """Every ``every_n_epochs`` validation epochs, draw ``num_samples`` samples and log ``val/fid``,
    ``val/kid``, ``val/precision`` and ``val/recall`` against the DataModule's validation images.

    The samples are 0..num_samples-1 under ``seed`` (per-sample seeding: the same noise every evaluation).
    Under DDP each rank draws a disjoint range of those indices and extracts features of its shard of the
    validation images; the torchmetrics states are gathered, so the figures are those of one process seeing
    everything, on the same samples. Keep ``num_samples`` small on CPU: sampling stalls training meanwhile.

    Args:
        extractor: a genlit classifier checkpoint, a run root of one (its newest ``last.ckpt``), or
            ``inception``; ``$VARS`` are expanded.
        every_n_epochs: validation epochs between evaluations.
        num_samples: samples per evaluation (over all ranks).
        batch_size: samples drawn at once.
        seed: noise seed (the same samples' noise every time, as for sample grids).
        kid_subset_size: KID subset size (capped at the sample count).
    """

    def __init__(
        self,
        extractor: str,
        every_n_epochs: int = 1,
        num_samples: int = 1000,
        batch_size: int = 250,
        seed: int = 0,
        kid_subset_size: int = 500,
    ) -> None:
        if every_n_epochs < 1 or num_samples < 2 or batch_size < 1:
            raise ValueError("SampleQualityMonitor needs every_n_epochs >= 1, num_samples >= 2 and batch_size >= 1")
        self.spec, self.every_n_epochs, self.num_samples = extractor, every_n_epochs, num_samples
        self.batch_size, self.seed, self.kid_subset_size = batch_size, seed, kid_subset_size
        self.extractor: FeatureExtractor | None = None
        self._real: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the module draws images and load the extractor (clear errors) before any training happens."""
        if stage != "fit":
            return
        if not (isinstance(pl_module, Generative) and isinstance(pl_module, DataShaped)):
            name = type(pl_module).__name__
            raise ValueError(f"SampleQualityMonitor needs a generative family of images, got {name}")
        if self.extractor is None:
            self.extractor = make_extractor(self.spec)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate and log on every ``every_n_epochs``-th validation epoch (not in the sanity check)."""
        if trainer.sanity_checking or self.extractor is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.extractor.to(pl_module.device)
        quality = SampleQuality(self.extractor.num_features, self.extractor.num_classes, self.kid_subset_size)
        quality.update_real(self._real_features(trainer).to(pl_module.device))
        features, logits = extract(self.extractor, self._samples(trainer, pl_module))
        quality.to(pl_module.device).update_fake(features.to(pl_module.device), logits.to(pl_module.device))
        values = quality.compute()
        for name in ("fid", "precision", "recall"):
            pl_module.log(f"val/{name}", values[name])
        pl_module.log("val/kid", values["kid_mean"])

    def _real_features(self, trainer: L.Trainer) -> torch.Tensor:
        if self._real is None:
            images, _ = trainer.datamodule.split_tensors("val")
            shard = images[trainer.global_rank :: trainer.world_size]  # (N / world, C, H, W)
            self._real = extract(self.extractor, shard)[0]
        return self._real

    @torch.no_grad()
    def _samples(self, trainer: L.Trainer, pl_module: Generative) -> torch.Tensor:
        """This rank's share of the uint8 samples (n, C, H, W): a disjoint range of the sample indices."""
        start, stop = rank_range(self.num_samples, trainer.global_rank, trainer.world_size)
        samples = pl_module.sample_many(range(start, stop), seed=self.seed, batch_size=self.batch_size)
        return to_uint8(samples).permute(0, 3, 1, 2)  # (n, C, H, W)
