"""In-memory tensor datasets that gather a whole batch with one indexing op per tensor, and their loader.

PyTorch's DataLoader fetches a batch through ``dataset.__getitems__(indices)`` when it exists; gathering
``x[indices]`` at once instead of indexing and re-stacking B single items removes most of the loader's
per-batch cost. Samplers are untouched, so Lightning's DistributedSampler still shards the data under DDP.

The loader is torchdata's ``StatefulDataLoader``: its ``state_dict`` (the shuffling generator and the batches
already yielded this epoch) goes into Lightning's checkpoints, so a run resumed mid-epoch sees exactly the
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.utils.data import TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata calls a retired torch API


class TensorPairs(TensorDataset):
    """A ``TensorDataset`` of equally long tensors (e.g. images and labels) with batched fetching."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)  # each (B, ...)


def keep_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Collate function for :class:`TensorPairs`: the batch is already gathered."""
    return batch


def tensor_loader(dataset: TensorPairs, batch_size: int, train: bool, **kwargs) -> StatefulDataLoader:
    """A resumable DataLoader over ``dataset``: shuffled with the last partial batch dropped when ``train``."""
    return StatefulDataLoader(
        dataset, batch_size=batch_size, shuffle=train, drop_last=train, collate_fn=keep_batch, **kwargs
    )
