"""FID, KID and precision/recall of a generative module's samples during training (``val/fid`` etc.)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from genlit.families.protocols import DataShaped, Generative
from genlit.imaging import to_uint8
from genlit.metrics.evaluators import evaluator_config, is_evaluator_spec
from genlit.metrics.extractors import extractor_from_bytes, make_extractor, resolve_extractor
from genlit.metrics.features import FeatureExtractor, extract
from genlit.metrics.fidelity import SampleQuality
from genlit.seeding import rank_range

_RANK_ZERO_ERRORS = {kind.__name__: kind for kind in (ValueError, FileNotFoundError, ConnectionError)}


class SampleQualityMonitor(Callback):
    """Every ``every_n_epochs`` validation epochs, draw ``num_samples`` samples and log ``val/fid``,
    ``val/kid``, ``val/precision`` and ``val/recall`` against the DataModule's validation images.

    The samples are 0..num_samples-1 under ``seed`` (per-sample seeding: the same noise every evaluation).
    Under DDP each rank draws a disjoint range of those indices and extracts features of its shard of the
    validation images; the torchmetrics states are gathered, so the figures are those of one process seeing
    everything, on the same samples. Keep ``num_samples`` small on CPU: sampling stalls training meanwhile.

    With an evaluator config (``evaluator:mnist_classifier``), the evaluator is the one trained on the run's own
    dataset (``trainer.datamodule.hparams.dataset``): found in genlit's cache or trained there once, on first use
    (:mod:`genlit.metrics.evaluators`). That happens in ``setup``, before any collective: global rank 0 finds or
    trains it (other runs wait on the cache's file lock) and broadcasts the checkpoint, so every rank loads the same
    evaluator whether or not the nodes share a cache folder, the other ranks wait in that broadcast, and an error
    on rank 0 reaches every rank. (The broadcast waits up to the process group's timeout, 30 minutes by default.)

    Args:
        extractor: an evaluator config (``evaluator:NAME`` or the path of an evaluator YAML), a genlit classifier
            checkpoint, a run root of one (its newest ``last.ckpt``), or ``inception``; ``$VARS`` are expanded.
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
        if is_evaluator_spec(extractor):
            evaluator_config(extractor)  # an unknown name fails here, when the config is read
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
        if self.extractor is None and is_evaluator_spec(self.spec):
            self.extractor = self._shared_evaluator(trainer)
        elif self.extractor is None:
            self.extractor = make_extractor(self.spec)

    def _shared_evaluator(self, trainer: L.Trainer) -> FeatureExtractor:
        """The evaluator global rank 0 found or trained on the run's dataset, loaded from its bytes on every rank."""
        checkpoint, error = None, None
        if trainer.is_global_zero:
            try:
                checkpoint = Path(resolve_extractor(self.spec, self._dataset(trainer))).read_bytes()
            except Exception as err:  # noqa: BLE001 - told to the other ranks, then raised here as it was
                error = err
        failure = None if error is None else (type(error).__name__, str(error))
        checkpoint, failure = trainer.strategy.broadcast((checkpoint, failure), src=0)
        if error is not None:
            raise error
        if failure is not None:  # the same error here, so a bad input is one line on every rank too
            raise _RANK_ZERO_ERRORS.get(failure[0], RuntimeError)(f"{failure[1]} (on global rank 0)")
        return extractor_from_bytes(checkpoint)

    def _dataset(self, trainer: L.Trainer) -> str:
        """The dataset the run trains on, as its DataModule names it (what the evaluator is trained on)."""
        data = trainer.datamodule
        dataset = getattr(data, "hparams", {}).get("dataset")
        if not isinstance(dataset, str):
            raise ValueError(
                f"SampleQualityMonitor: the evaluator {self.spec} is trained on the run's dataset, but "
                f"the run's DataModule ({type(data).__name__}) has no `dataset`; pass a classifier checkpoint instead"
            )
        return dataset

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
