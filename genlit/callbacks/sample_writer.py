"""SampleWriter: the samples Lightning's predict loop draws on every rank, written as one ``.npz`` (and shards).

Each rank keeps the samples of its requests (:class:`genlit.data.requests.SampleRequests`) and writes them, with
their indices, to ``<out stem>.rank<r>.npz``; after a barrier, rank 0 puts every sample at its index (dropping the
repeats DistributedSampler pads the last ranks with) and writes ``out`` and a PNG grid of the first 64 beside it.
With per-sample seeding the result is the same for any number of devices and nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from genlit.files import atomic_write
from genlit.imaging import write_samples


class SampleWriter(BasePredictionWriter):
    """Write the predicted samples to ``out`` (an ``.npz``: ``arr_0`` samples, ``arr_1`` labels when any).

    Args:
        out: the ``.npz`` to write; shards go beside it.
    """

    def __init__(self, out: str) -> None:
        super().__init__(write_interval="batch")
        if Path(out).suffix != ".npz":
            raise ValueError(f"SampleWriter out must end in .npz, got {out}")
        self.out = Path(out)
        self._parts: list[dict] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start an empty shard."""
        self._parts = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        """Keep this request's samples (on the CPU) with their indices."""
        if not isinstance(prediction, dict) or not isinstance(prediction.get("samples"), torch.Tensor):
            raise ValueError("SampleWriter writes tensor samples of sample requests; text models: genlit sample")
        self._parts.append({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in prediction.items()})

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write this rank's shard, then (rank 0, once every shard is written) the whole ``out``."""
        shard = self.shard_path(trainer.global_rank)
        write_shard(shard, self._parts)
        trainer.strategy.barrier("genlit-sample-shards")
        if trainer.is_global_zero:
            samples, labels = merge_shards([self.shard_path(r) for r in range(trainer.world_size)])
            write_samples(self.out, samples, labels)
        trainer.strategy.barrier("genlit-sample-written")

    def shard_path(self, rank: int) -> Path:
        """``<out stem>.rank<r>.npz`` beside ``out``."""
        return self.out.with_name(f"{self.out.stem}.rank{rank}.npz")


def write_shard(path: Path, parts: list[dict]) -> None:
    """One rank's samples (float32), indices and labels as an ``.npz``."""
    arrays = {"indices": np.concatenate([p["indices"].numpy() for p in parts]) if parts else np.zeros(0, np.int64)}
    if parts:
        arrays["samples"] = torch.cat([p["samples"].float() for p in parts]).numpy()
        if parts[0]["labels"] is not None:
            arrays["labels"] = torch.cat([p["labels"] for p in parts]).numpy()
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def merge_shards(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every sample once, in index order, from the shards of all ranks."""
    shards = [np.load(path) for path in paths]
    shards = [s for s in shards if len(s["indices"])]
    indices = np.concatenate([s["indices"] for s in shards])
    order, first = np.unique(indices, return_index=True)
    if not np.array_equal(order, np.arange(len(order))):
        raise ValueError(f"the shards {[str(p) for p in paths]} miss sample indices; rerun the sampling")
    samples = torch.from_numpy(np.concatenate([s["samples"] for s in shards])[first])
    labels = torch.from_numpy(np.concatenate([s["labels"] for s in shards])[first]) if "labels" in shards[0] else None
    return samples, labels
