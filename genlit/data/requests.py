"""Sample requests: the "data" of drawing samples with Lightning's predict loop, on any number of devices.

Each batch is a request ``{"indices": (B,) long, "seed": int, "labels": (B,) long or absent}``: draw the samples
with these global indices. Under DDP Lightning's DistributedSampler hands each rank its own requests, and with
per-sample seeding (:class:`genlit.seeding.SampleRNG`) sample i is the same whichever rank draws it, so N devices
draw exactly what one process draws. (The sampler pads the last ranks with repeats; writers drop them by index.)

    genlit predict --config runs/.../config.yaml --ckpt_path runs/.../checkpoints/last.ckpt \\
        --data genlit.data.requests.SampleRequests --data.num 50000 --trainer.devices 8 \\
        --trainer.callbacks+=genlit.callbacks.sample_writer.SampleWriter --trainer.callbacks.out samples.npz

(``genlit sample --devices 8`` does the same in one option.)
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader


class SampleRequests(L.LightningDataModule):
    """``num`` samples under ``seed``, requested ``batch_size`` at a time (``predict_dataloader`` only).

    Args:
        num: how many samples (indices 0..num-1).
        seed: the seed of the per-sample noise.
        batch_size: samples per request (one model call).
        label: the class of every sample (conditional models); default: the model's balanced labels.
    """

    def __init__(self, num: int, seed: int = 0, batch_size: int = 500, label: int | None = None) -> None:
        super().__init__()
        if num < 1 or batch_size < 1:
            raise ValueError(f"SampleRequests needs num >= 1 and batch_size >= 1, got {num} and {batch_size}")
        self.num, self.seed, self.batch_size, self.label = num, seed, batch_size, label

    def requests(self) -> list[dict]:
        """Every request, in index order."""
        batches = torch.arange(self.num).split(self.batch_size)
        return [self._request(indices) for indices in batches]

    def _request(self, indices: torch.Tensor) -> dict:
        request = {"indices": indices, "seed": torch.tensor(self.seed)}
        if self.label is not None:
            request["labels"] = torch.full_like(indices, self.label)
        return request

    def predict_dataloader(self) -> DataLoader:
        """One request per batch (already batched: ``batch_size=None``)."""
        return DataLoader(self.requests(), batch_size=None, shuffle=False)
