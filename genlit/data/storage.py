"""Where a DataModule keeps its data while training, and which share of a stream this process reads.

``storage`` takes the same names and meaning in every genlit DataModule:

- ``memory``: every split decoded (or encoded) once into tensors in memory; the default.
- ``disk``: the splits stay on disk, memory-mapped, and each batch is read from the page cache, which the
  DataLoader workers of a node share; for data larger than memory.
- ``stream``: a Hugging Face dataset read as it is iterated (``datasets`` streaming); nothing is converted
  or stored ahead, and DDP ranks and DataLoader workers each read their own shards.
"""

from __future__ import annotations

from typing import Literal

import torch

Storage = Literal["memory", "disk", "stream"]


def rank_and_world(trainer: object | None) -> tuple[int, int]:
    """This process's rank and the number of processes: the trainer's once one is attached, else
    ``torch.distributed``'s when it is initialised, else (0, 1)."""
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def one_input_shard() -> dict:
    """Keyword arguments for ``datasets.IterableDataset.shuffle`` that feed its buffer from one shard at a time
    (``max_buffer_input_shards=1``, where ``datasets`` has it: 5.0 on). Its default merges up to 10 shards into
    one, which leaves the DataLoader workers and DDP ranks of a dataset with fewer than 20 files without shards
    (huggingface/datasets#8669) and makes resuming with workers fail (an IndexError)."""
    import inspect

    from datasets import IterableDataset

    known = inspect.signature(IterableDataset.shuffle).parameters
    return {"max_buffer_input_shards": 1} if "max_buffer_input_shards" in known else {}
