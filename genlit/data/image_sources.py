"""Image batches decoded from disk per batch, for datasets larger than memory.

Two sources, both decoding in the DataLoader's worker processes with the same function as the in-memory
path (:func:`image_to_chw`), so a batch holds the same pixels whichever path made it:

- :class:`ArrowImages` (``storage: disk``): the ``datasets`` Arrow cache, memory-mapped; a map-style dataset
  whose ``__getitems__`` gathers the encoded rows of one batch and decodes them. Samplers, DDP sharding
  (Lightning's ``DistributedSampler``) and exact mid-epoch resume (torchdata's ``StatefulDataLoader``) work
  as for the in-memory tensors, and with the same seed the batches equal the in-memory path's.
- :func:`stream_images` (``storage: stream``): a ``datasets`` ``IterableDataset`` read as it downloads,
  shuffled through a buffer, split across ranks with ``datasets.distributed.split_dataset_by_node`` and
  across workers by ``datasets`` (by shard), decoded example by example in the workers. Resumable as far as
  ``datasets`` allows: its ``state_dict`` records the position in the shards, but not the shuffle buffer,
  which is refilled on resume (so a resumed stream does not replay exactly the batches it would have had).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

if TYPE_CHECKING:  # imported where used: `datasets` alone takes about 2 s to import
    import datasets

ResizeMode = Literal["resize", "center_crop"]


def image_to_chw(image: Image.Image, mode: str, size: int, resize: ResizeMode) -> np.ndarray:
    """Convert to ``mode`` (L or RGB), optionally centre-crop to a square, resize (bilinear, antialiased)."""
    image = image.convert(mode)
    if resize == "center_crop":
        w, h = image.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)  # PIL filters antialias downscaling
    array = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)


def open_encoded(value: dict) -> Image.Image:
    """A PIL image from an undecoded ``datasets.Image`` value (``{"bytes": ..., "path": ...}``)."""
    if value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"]))
    if value.get("path"):
        return Image.open(value["path"])
    raise ValueError("an image row holds neither bytes nor a path; the dataset's image column is broken")


class ImageDecoder:
    """Encoded image rows -> uint8 (C, H, W) arrays of one shape (picklable, so it runs in workers)."""

    def __init__(self, mode: str, size: int, resize: ResizeMode) -> None:
        self.mode, self.size, self.resize = mode, size, resize

    def __call__(self, value: dict) -> np.ndarray:
        return image_to_chw(open_encoded(value), self.mode, self.size, self.resize)  # (C, H, W)


def _labels(values: list | None, num: int) -> Tensor:
    """int64 labels (B,), -1 for unlabelled data."""
    if values is None:
        return torch.full((num,), -1, dtype=torch.int64)
    return torch.as_tensor(values, dtype=torch.int64)


class ArrowImages(Dataset):
    """A memory-mapped ``datasets.Dataset`` of encoded images (and labels), decoded one batch at a time.

    ``rows`` (optional) maps item i to row ``rows[i]`` of ``table``: a validation carve or a class filter
    without copying the table. Items are ``(uint8 (C, H, W), int64 label)``; ``__getitems__`` returns the
    whole batch ``(uint8 (B, C, H, W), int64 (B,))`` as :class:`~genlit.data.tensors.TensorPairs` does.
    """

    def __init__(
        self,
        table: datasets.Dataset,
        image_column: str,
        label_column: str | None,
        decoder: ImageDecoder,
        rows: Tensor | None = None,
    ) -> None:
        import datasets

        columns = [image_column] + ([label_column] if label_column else [])
        self.table = table.select_columns(columns).cast_column(image_column, datasets.Image(decode=False))
        self.image_column, self.label_column, self.decoder = image_column, label_column, decoder
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.table.num_rows

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([i])
        return images[0], labels[0]  # (C, H, W), ()

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        rows = indices if self.rows is None else self.rows[torch.as_tensor(indices, dtype=torch.long)].tolist()
        batch = self.table[rows]
        images = np.stack([self.decoder(value) for value in batch[self.image_column]])  # (B, C, H, W)
        labels = _labels(batch[self.label_column] if self.label_column else None, len(rows))  # (B,)
        return torch.from_numpy(images), labels

    def labels(self) -> Tensor:
        """Every item's label (N,) int64, read from the label column alone (no image is decoded)."""
        if self.label_column is None:
            return torch.full((len(self),), -1, dtype=torch.int64)
        column = self.table.select_columns([self.label_column]).with_format("arrow")[:].column(0)
        labels = torch.from_numpy(column.to_numpy().astype(np.int64))  # (rows,)
        return labels if self.rows is None else labels[self.rows]

    def subset(self, items: Tensor) -> ArrowImages:
        """The items ``items`` (1-D int64) of this dataset, sharing its table."""
        rows = items if self.rows is None else self.rows[items]
        return ArrowImages(self.table, self.image_column, self.label_column, self.decoder, rows)


class KeepExamples:
    """``IterableDataset.filter`` function for a stream: drop ``held_out`` classes and, with ``val_fraction``,
    keep one side of a validation carve made by hashing each image's bytes (CRC-32): the same examples on
    every rank, worker, shard layout and run, whatever order the stream comes in, about ``val_fraction`` of
    them on the ``val`` side."""

    def __init__(self, held_out: list[int], val_fraction: float | None, val: bool) -> None:
        self.held_out, self.val_fraction, self.val = frozenset(held_out), val_fraction, val

    def __call__(self, image: dict, label: int | None = None) -> bool:
        if label is not None and label in self.held_out:
            return False
        if self.val_fraction is None:
            return True
        key = image.get("bytes") or str(image.get("path")).encode()
        return (zlib.crc32(key) / 2**32 < self.val_fraction) == self.val


def stream_rows(stream: datasets.IterableDataset, split: str) -> int | None:
    """The number of rows of a streamed split when known without reading it: from the dataset card's
    split sizes, else from the footers of its parquet files (a few KB each, local or on the Hub), else None."""
    import fsspec
    import pyarrow.parquet as pq

    splits = stream.info.splits
    if splits and split in splits and splits[split].num_examples:
        return splits[split].num_examples
    files = _data_files(stream)
    if not files or not all(str(f).endswith(".parquet") for f in files):
        return None
    total = 0
    for path in files:
        with fsspec.open(str(path), "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _data_files(stream: datasets.IterableDataset) -> list[str]:
    """The data files a streaming split reads (its shards), as ``datasets`` lists them."""
    kwargs = getattr(stream._ex_iterable, "kwargs", {})  # the generator's arguments: one list per shard kind
    files = kwargs.get("files") or kwargs.get("filepaths") or []
    return [str(f) for f in files]


class _DecodeExample:
    """``IterableDataset.map`` function: an encoded example -> ``pixels`` uint8 (C, H, W) and ``label``."""

    def __init__(self, image_column: str, label_column: str | None, decoder: ImageDecoder) -> None:
        self.image_column, self.label_column, self.decoder = image_column, label_column, decoder

    def __call__(self, example: dict) -> dict:
        label = -1 if self.label_column is None else int(example[self.label_column])
        return {"pixels": self.decoder(example[self.image_column]), "label": label}


def stack_examples(examples: list[dict]) -> tuple[Tensor, Tensor]:
    """Collate decoded stream examples into ``(uint8 (B, C, H, W), int64 (B,))``."""
    images = torch.from_numpy(np.stack([np.asarray(e["pixels"], dtype=np.uint8) for e in examples]))
    return images, torch.as_tensor([e["label"] for e in examples], dtype=torch.int64)


def stream_images(
    stream: datasets.IterableDataset,
    image_column: str,
    label_column: str | None,
    decoder: ImageDecoder,
    *,
    rank: int = 0,
    world_size: int = 1,
    keep: KeepExamples | None = None,
    endless: bool = False,
) -> datasets.IterableDataset:
    """This rank's share of ``stream``, decoded per example (lazily, in whichever worker iterates it).

    ``keep`` filters examples (validation carve, held-out classes); ``endless`` repeats the share forever,
    so that under DDP a loader cut to a fixed number of batches never runs dry on a rank whose share is a
    little shorter (see :class:`EpochStreamLoader`). Shuffle ``stream`` before calling this.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    columns = [image_column] + ([label_column] if label_column else [])
    stream = stream.select_columns(columns).cast_column(image_column, datasets.Image(decode=False))
    if keep is not None:
        stream = stream.filter(keep, input_columns=columns)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    if endless:
        stream = stream.repeat(None)
    return stream.map(_DecodeExample(image_column, label_column, decoder), remove_columns=columns)


class EpochStreamLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` over a ``datasets`` stream that sets the stream's epoch on every pass.

    Lightning calls ``set_epoch`` on samplers only, and an iterable dataset has none; ``epoch`` (e.g. the
    trainer's current epoch) reseeds the shuffle of each epoch, also in persistent workers (``datasets``
    keeps the epoch in shared memory). ``num_batches`` gives the loader a length, so every DDP rank ends its
    epochs after the same number of steps (over an endless stream, :func:`stream_images`).
    """

    def __init__(
        self, dataset: datasets.IterableDataset, epoch: Callable[[], int], num_batches: int | None = None, **kwargs
    ) -> None:
        super().__init__(dataset, collate_fn=stack_examples, **kwargs)
        self._epoch, self.num_batches = epoch, num_batches

    def __len__(self) -> int:
        """``num_batches`` when given: Lightning then ends every epoch after that many batches."""
        return self.num_batches if self.num_batches is not None else super().__len__()

    def __iter__(self):
        self.dataset.set_epoch(self._epoch())
        return super().__iter__()
