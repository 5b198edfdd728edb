"""Image datasets from Hugging Face ``datasets``, decoded once into uint8 tensors and augmented on device.

``prepare_data`` downloads (or converts a local copy) and decodes the splits with a batched
``Dataset.map``, which ``datasets`` caches on disk by fingerprint: later runs and other DDP ranks skip
the PIL work. ``setup`` reads the cached bytes into uint8 tensors (N, C, H, W) and carves validation.
``on_after_batch_transfer`` converts to [-1, 1] (:func:`to_model_space`) and augments on the device
(:func:`augment_images`). A cached Hub dataset loads without touching the network; otherwise a quick
probe replaces the ~25 s of HTTP retries ``datasets`` spends without a network.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import datasets
import lightning as L
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from genlit.data.hub import load_raw_dataset, resolve_dataset
from genlit.data.image_sources import (
    ArrowImages,
    EpochStreamLoader,
    ImageDecoder,
    KeepExamples,
    ResizeMode,
    image_to_chw,
    stack_examples,
    stream_images,
    stream_rows,
)
from genlit.data.storage import Storage, one_input_shard, rank_and_world
from genlit.data.tensors import TensorPairs, tensor_loader

PaddingMode = Literal["reflect", "zeros"]

_VALIDATION_NAMES = ("validation", "valid", "val")  # split names used for validation when present
_PIXELS = "__genlit_pixels__"  # column of decoded (C, H, W) uint8 bytes written by the cached map
Split = TensorPairs | ArrowImages | datasets.IterableDataset  # one split, as its storage holds it
_PARALLEL_DECODE_MIN = 20_000  # decode with `num_workers` processes from this many images on


def to_model_space(x: Tensor) -> Tensor:
    """Map uint8 pixels in [0, 255] to float32 in [-1, 1]; the one place genlit does this conversion.

    The inverse for saving samples is :func:`genlit.imaging.to_uint8`.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model_space expects uint8 pixels in [0, 255], got dtype {x.dtype}")
    return x.float() / 127.5 - 1.0  # (B, C, H, W)


def augment_images(
    x: Tensor,
    hflip: bool = False,
    crop_padding: int = 0,
    padding_mode: PaddingMode = "reflect",
    generator: torch.Generator | None = None,
    mutation_rate: float = 0.0,
) -> Tensor:
    """Randomly flip, crop and mutate a batch (B, C, H, W) on its own device; every image draws its own choices.

    ``hflip`` mirrors each image left-right with probability 1/2. ``crop_padding`` p > 0 pads by p pixels
    (``reflect``, or ``zeros`` = black, i.e. -1 in model space) and takes a random H x W window: the
    CIFAR augmentation of He et al. 2016 (https://arxiv.org/abs/1512.03385, section 4.2). ``mutation_rate`` m
    replaces each pixel (all its channels) with probability m by a uniformly drawn 8-bit colour: the input
    perturbation that trains a background model for likelihood-ratio anomaly scores (Ren et al. 2019,
    https://arxiv.org/abs/1906.02845, section 4). ``generator`` must live on ``x.device``.
    """
    b, c, h, w = x.shape
    dev = x.device
    if hflip:
        flip = torch.rand(b, device=dev, generator=generator) < 0.5  # (B,)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # (B, C, H, W)
    if crop_padding > 0:
        p = crop_padding
        if padding_mode == "reflect":
            padded = F.pad(x, (p, p, p, p), mode="reflect")  # (B, C, H + 2p, W + 2p)
        else:
            padded = F.pad(x, (p, p, p, p), value=-1.0)  # (B, C, H + 2p, W + 2p)
        top = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)  # (B,)
        left = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)  # (B,)
        rows = (top[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (left[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b, device=dev)[:, None, None, None]  # (B, 1, 1, 1)
        chans = torch.arange(c, device=dev)[None, :, None, None]  # (1, C, 1, 1)
        x = padded[batch, chans, rows, cols]  # (B, C, H, W)
    if mutation_rate > 0:
        mutate = torch.rand(b, 1, h, w, device=dev, generator=generator) < mutation_rate  # (B, 1, H, W)
        levels = torch.randint(0, 256, (b, c, h, w), device=dev, generator=generator)  # (B, C, H, W)
        x = torch.where(mutate, levels / 127.5 - 1.0, x)  # (B, C, H, W)
    return x


def _decode_batch(
    batch: dict[str, list], image_column: str, mode: str, size: int, resize: ResizeMode
) -> dict[str, list[bytes]]:
    """``Dataset.map`` function: decoded PIL images -> raw (C, H, W) uint8 bytes in column ``_PIXELS``."""
    return {_PIXELS: [image_to_chw(im, mode, size, resize).tobytes() for im in batch[image_column]]}


def _pixels_to_tensor(column: pa.ChunkedArray, shape: tuple[int, int, int]) -> Tensor:
    """Copy a binary column of equal-length (C, H, W) byte strings into one uint8 tensor (N, C, H, W)."""
    images = torch.empty((len(column), *shape), dtype=torch.uint8)  # (N, C, H, W)
    flat = images.view(len(column), -1).numpy()  # (N, C*H*W), shares memory with images
    start = 0
    for chunk in column.chunks:
        values = np.frombuffer(b"".join(chunk.to_pylist()), dtype=np.uint8)  # (n * C*H*W,)
        flat[start : start + len(chunk)] = values.reshape(len(chunk), -1)
        start += len(chunk)
    return images


class ImageDataModule(L.LightningDataModule):
    """Images from a Hugging Face dataset (Hub id, local parquet/imagefolder directory or parquet file).

    Images are converted to grey (``channels=1``) or RGB (``channels=3``) and resized (or centre-cropped,
    then resized) to ``image_size``. ``storage`` says where they live while training:

    - ``memory`` (default): every split is decoded once into memory as uint8 (N, C, H, W); the decoding is
      cached by ``datasets``, so only the first run pays for it. Refused beyond ``max_memory_gb``.
    - ``disk``: the ``datasets`` Arrow cache, memory-mapped, decoded one batch at a time in the DataLoader
      workers (:class:`~genlit.data.image_sources.ArrowImages`); same batches as ``memory`` for the same seed,
      exact resume, any size that fits on disk. Give it ``num_workers`` to decode in parallel.
    - ``stream``: read as it downloads (a ``datasets`` streaming dataset): shuffled through a
      ``shuffle_buffer``, split across DDP ranks by ``datasets``, decoded in the workers; nothing is stored.
      Without a validation split, the first ``val_fraction`` of train validates. Under DDP every rank is cut
      to the same number of examples, which needs the split's row count (the dataset card or parquet files).
      Resume continues from the position in the stream, with a refilled shuffle buffer.

    Validation comes from ``val_split``, else a
    ``validation`` split, else a ``val_fraction`` of train drawn with ``seed`` (the same on every rank and
    run). Dataloaders yield ``(uint8 images, int64 labels)`` (labels -1 when ``label_column`` is None);
    ``on_after_batch_transfer`` converts to float in [-1, 1] on the device and augments while training.
    Outside a Trainer, apply :func:`to_model_space` (and :func:`augment_images`) yourself.
    ``num_classes`` comes from the label column's ``ClassLabel`` unless given. ``cache_dir`` overrides
    the ``datasets`` cache (default ``$HF_DATASETS_CACHE``). ``held_out_classes`` are removed from train
    and validation but kept in test (anomaly detection: train on normal classes, score the held-out ones).
    ``train_limit`` keeps the first N training images after the validation carve-out (a limited-data
    experiment such as ADA on 1,000 images; memory and disk storage). ``mutation_rate`` replaces that share of
    the training pixels by random colours, afresh each step (:func:`augment_images`): the background model of a
    likelihood-ratio anomaly score (Ren et al. 2019; they found 0.1-0.3 best).
    """

    def __init__(
        self,
        dataset: str,
        image_column: str = "image",
        label_column: str | None = "label",
        image_size: int = 28,
        channels: Literal[1, 3] = 1,
        num_classes: int | None = None,
        batch_size: int = 64,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = "test",
        val_fraction: float = 0.05,
        resize: ResizeMode = "resize",
        hflip: bool = False,
        random_crop_padding: int = 0,
        padding_mode: PaddingMode = "reflect",
        seed: int = 0,
        num_workers: int = 0,
        max_memory_gb: float = 8.0,
        cache_dir: str | None = None,
        held_out_classes: list[int] | None = None,
        storage: Storage = "memory",
        shuffle_buffer: int = 10_000,
        train_limit: int | None = None,
        mutation_rate: float = 0.0,
    ) -> None:
        super().__init__()
        # num_classes is left out: the model's linked num_classes is the one record of it in the hparams
        self.save_hyperparameters(ignore=["num_classes"])
        self._check_args(num_classes)
        self._num_classes = num_classes if num_classes is not None else (0 if label_column is None else None)
        self._train: Split | None = None
        self._val: Split | None = None
        self._test: Split | None = None
        self._splits: tuple[str, ...] = ()
        self._train_batches: int | None = None  # per epoch and rank, for a stream under DDP

    def _check_args(self, num_classes: int | None) -> None:
        hp = self.hparams
        for name, allowed in (("channels", (1, 3)), ("resize", get_args(ResizeMode))):
            if hp[name] not in allowed:
                raise ValueError(f"{name} {hp[name]!r} is not supported; use one of {allowed}")
        if hp.storage not in get_args(Storage):
            raise ValueError(f"storage {hp.storage!r} is not known; use one of {', '.join(get_args(Storage))}")
        if hp.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer {hp.shuffle_buffer} must be >= 1")
        if hp.padding_mode not in get_args(PaddingMode):
            raise ValueError(f"padding_mode {hp.padding_mode!r} is not known; use one of reflect, zeros")
        if hp.image_size < 1 or hp.batch_size < 1 or hp.num_workers < 0 or hp.max_memory_gb <= 0:
            raise ValueError("image_size and batch_size must be >= 1, num_workers >= 0, max_memory_gb > 0")
        if not 0.0 < hp.val_fraction < 1.0:
            raise ValueError(f"val_fraction {hp.val_fraction} must lie strictly between 0 and 1")
        pad = hp.random_crop_padding
        if pad < 0 or (hp.padding_mode == "reflect" and pad >= hp.image_size):
            raise ValueError(f"random_crop_padding {pad} must be >= 0 and < image_size for reflect padding")
        if hp.held_out_classes and hp.label_column is None:
            raise ValueError("held_out_classes needs labels; set --data.label_column")
        if hp.train_limit is not None and (hp.train_limit < 1 or hp.storage == "stream"):
            raise ValueError(f"train_limit {hp.train_limit} must be >= 1 and needs memory or disk storage, not stream")
        if not 0.0 <= hp.mutation_rate < 1.0:
            raise ValueError(f"mutation_rate {hp.mutation_rate} must lie in [0, 1) (Ren et al. use 0.1-0.3)")
        if num_classes is not None and num_classes < 0:
            raise ValueError(f"num_classes {num_classes} must be >= 0 (0 = unconditional)")

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model sees."""
        return (self.hparams.channels, self.hparams.image_size, self.hparams.image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes: the given value, 0 without labels, else the label ``ClassLabel``'s size."""
        if self._num_classes is None:
            raw = self._load_raw()
            split = self.hparams.train_split if self.hparams.train_split in raw else next(iter(raw))
            feature = raw[split].features.get(self.hparams.label_column)
            if feature is None:
                self._check_columns(raw[split].column_names, split)
            if not isinstance(feature, datasets.ClassLabel):
                raise ValueError(
                    f"label column {self.hparams.label_column!r} of {self.hparams.dataset!r} is {feature}, "
                    "not a ClassLabel, so the number of classes is unknown; set --data.num_classes"
                )
            self._num_classes = feature.num_classes
        return self._num_classes

    def _load_raw(self) -> datasets.DatasetDict | datasets.IterableDatasetDict:
        """The undecoded splits: a streaming ``IterableDatasetDict`` for ``storage: stream``."""
        streaming = self.hparams.storage == "stream"
        return load_raw_dataset(resolve_dataset(self.hparams.dataset), self.hparams.cache_dir, streaming=streaming)

    def prepare_data(self) -> None:
        """Download / convert the dataset into the ``datasets`` cache and, in ``memory`` storage, decode the
        splits in use there too (a stream needs nothing ahead: it is read as training goes)."""
        if self.hparams.storage == "stream":
            return
        raw = self._load_raw()
        names = [name for name in self._split_names(raw) if name is not None]
        if self.hparams.storage == "memory":
            self._check_memory(raw, names)
        for name in names:
            self._check_images(raw[name], name)
            if self.hparams.storage == "memory":
                self._decode(raw[name], name)

    def setup(self, stage: str | None = None) -> None:
        """Load the decoded splits that ``stage`` needs into uint8 tensors and carve validation if needed."""
        fit = stage in (None, "fit", "validate") and self._train is None
        test = stage in (None, "test") and self._test is None
        if not (fit or test):
            return
        raw = self._load_raw()
        self._splits = tuple(raw)
        if self.hparams.storage == "stream":
            self._setup_stream(raw, fit, test)
            return
        train_name, val_name, test_name = self._split_names(raw)
        wanted = [train_name, val_name] if fit else []
        wanted = [name for name in [*wanted, test_name if test else None] if name is not None]
        if self.hparams.storage == "memory":
            self._check_memory(raw, wanted)
        sets = {name: self._dataset(raw[name], name) for name in wanted}
        if fit:
            train, val = self._train_val(sets, train_name, val_name)
            self._train, self._val = self._without_held_out(train), self._without_held_out(val)
            if self.hparams.train_limit is not None:
                self._train = _subset(self._train, torch.arange(min(self.hparams.train_limit, len(self._train))))
        if test and test_name is not None:
            self._test = sets[test_name]

    def _dataset(self, ds: datasets.Dataset, split: str) -> TensorPairs | ArrowImages:
        """One split as in-memory tensors (``memory``) or as memory-mapped rows decoded per batch (``disk``)."""
        if self.hparams.storage == "memory":
            return TensorPairs(*self._tensors(ds, split))
        self._check_images(ds, split)
        if self.hparams.label_column is not None:  # read the labels alone, to check them once
            self._labels(ds.select_columns([self.hparams.label_column]).with_format("arrow")[:].column(0), split)
        return ArrowImages(ds, self.hparams.image_column, self.hparams.label_column, self._decoder())

    def _decoder(self) -> ImageDecoder:
        hp = self.hparams
        return ImageDecoder("L" if hp.channels == 1 else "RGB", hp.image_size, hp.resize)

    def _setup_stream(self, raw: datasets.IterableDatasetDict, fit: bool, test: bool) -> None:
        """Streams of this rank's share of train (shuffled), validation (the split, else the examples a hash
        of their bytes puts in a ``val_fraction`` carve, which training then skips) and test."""
        hp = self.hparams
        train_name, val_name, test_name = self._split_names(raw)
        rank, world = rank_and_world(self.trainer)
        kwargs = {"decoder": self._decoder(), "rank": rank, "world_size": world}
        columns = (hp.image_column, hp.label_column)
        for name in {train_name, val_name, test_name if test else None} - {None}:
            self._check_images(raw[name], name)
        if fit:
            carve = hp.val_fraction if val_name is None else None
            held = self.held_out_classes
            keep_train = KeepExamples(held, carve, val=False) if held or carve else None
            keep_val = KeepExamples(held, carve, val=True) if held or carve else None
            self._train_batches = self._stream_batches(raw[train_name], train_name, carve, world)
            train = raw[train_name].shuffle(seed=hp.seed, buffer_size=hp.shuffle_buffer, **one_input_shard())
            self._train = stream_images(train, *columns, keep=keep_train, endless=world > 1, **kwargs)
            self._val = stream_images(raw[val_name or train_name], *columns, keep=keep_val, **kwargs)
        if test and test_name is not None:
            self._test = stream_images(raw[test_name], *columns, **kwargs)

    def _stream_batches(
        self, stream: datasets.IterableDataset, split: str, carve: float | None, world: int
    ) -> int | None:
        """Batches per epoch on every rank under DDP (one pass over the train rows, shared out), so all ranks
        run the same steps; None on one process, where an epoch is the whole stream."""
        if world == 1:
            return None
        num = stream_rows(stream, split)
        if num is None or self.held_out_classes:
            why = "held_out_classes filter it" if self.held_out_classes else "its row count is unknown"
            raise ValueError(
                f"streaming {self.hparams.dataset!r} on {world} ranks needs the number of train examples, "
                f"but {why}; use --data.storage disk"
            )
        batches = int(num * (1 - (carve or 0.0))) // (world * self.hparams.batch_size)
        if batches < 1:
            raise ValueError("the train split has too few rows for one batch per rank; lower --data.batch_size")
        return batches

    def _split_names(self, raw: datasets.DatasetDict) -> tuple[str, str | None, str | None]:
        """(train, validation or None = carve from train, test or None) split names."""
        hp = self.hparams
        for option, name in (("train_split", hp.train_split), ("val_split", hp.val_split)):
            if name is not None and name not in raw:
                raise ValueError(
                    f"split {name!r} not in {hp.dataset!r} (splits: {', '.join(raw)}); set --data.{option}"
                )
        val = hp.val_split
        if val is None:
            val = next((s for s in _VALIDATION_NAMES if s in raw and s != hp.train_split), None)
        test = hp.test_split if hp.test_split in raw else None
        return hp.train_split, val, test

    def _check_memory(self, raw: datasets.DatasetDict, names: list[str]) -> None:
        c, h, w = self.data_shape
        num = sum(raw[name].num_rows for name in names)
        need_gb = num * c * h * w / 1e9
        if need_gb > self.hparams.max_memory_gb:
            raise ValueError(
                f"decoding {num} images of {c}x{h}x{w} needs {need_gb:.1f} GB, more than "
                f"--data.max_memory_gb {self.hparams.max_memory_gb}; use --data.storage disk (decoded per batch "
                "from the memory-mapped cache) or stream, raise --data.max_memory_gb or lower --data.image_size"
            )

    def _check_columns(self, columns: list[str], split: str) -> None:
        hp = self.hparams
        for option, column in (("image_column", hp.image_column), ("label_column", hp.label_column)):
            if column is not None and column not in columns:
                extra = " (or null for unlabelled data)" if option == "label_column" else ""
                raise ValueError(
                    f"{option.split('_')[0]} column {column!r} not in split {split!r} of {hp.dataset!r} "
                    f"(columns: {', '.join(columns)}); set --data.{option}{extra}"
                )

    def _check_images(self, ds: datasets.Dataset | datasets.IterableDataset, split: str) -> None:
        """One clear error when the image or label column is missing or the image column holds no images
        (a stream whose features are unknown until read is let through)."""
        if ds.features is None:
            return
        column = self.hparams.image_column
        self._check_columns(list(ds.features), split)
        if not isinstance(ds.features[column], datasets.Image):
            raise ValueError(
                f"column {column!r} of {self.hparams.dataset!r} holds {ds.features[column]}, "
                "not images; set --data.image_column to an Image column"
            )

    def _decode(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Decode ``ds`` into a ``_PIXELS`` byte column (plus the labels) via a cached batched map."""
        hp = self.hparams
        self._check_images(ds, split)
        parallel = hp.num_workers > 1 and ds.num_rows >= _PARALLEL_DECODE_MIN
        mode = "L" if hp.channels == 1 else "RGB"
        kwargs = {"image_column": hp.image_column, "mode": mode, "size": hp.image_size, "resize": hp.resize}
        drop = [col for col in ds.column_names if col != hp.label_column]
        num_proc = hp.num_workers if parallel else None
        desc = f"decoding {split} images"
        return ds.map(_decode_batch, batched=True, fn_kwargs=kwargs, remove_columns=drop, num_proc=num_proc, desc=desc)

    def _tensors(self, ds: datasets.Dataset, split: str) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of one split, labels checked against classes."""
        table = self._decode(ds, split).with_format("arrow")[:]
        images = _pixels_to_tensor(table.column(_PIXELS), self.data_shape)  # (N, C, H, W)
        column = self.hparams.label_column
        if column is None:
            return images, torch.full((len(images),), -1, dtype=torch.int64)  # (N,)
        return images, self._labels(table.column(column), split)

    def _labels(self, labels: pa.ChunkedArray, split: str) -> Tensor:
        """int64 labels (N,) from the label column, checked to lie in [0, num_classes)."""
        column = self.hparams.label_column
        if not pa.types.is_integer(labels.type) or labels.null_count:
            raise ValueError(
                f"label column {column!r} of {self.hparams.dataset!r} must hold integer class ids without "
                f"missing values (it holds {labels.type}); fix --data.label_column or set it to null"
            )
        labels = torch.from_numpy(labels.to_numpy().astype(np.int64))  # (N,)
        k = self.num_classes
        lo, hi = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        if k > 0 and (lo < 0 or hi >= k):
            raise ValueError(
                f"labels of split {split!r} in {self.hparams.dataset!r} lie in [{lo}, {hi}], "
                f"outside [0, {k}); fix --data.num_classes or --data.label_column"
            )
        return labels

    def _train_val(
        self, sets: dict[str, TensorPairs | ArrowImages], train_name: str, val_name: str | None
    ) -> tuple[TensorPairs | ArrowImages, TensorPairs | ArrowImages]:
        """Train and validation sets; without a validation split, a seeded ``val_fraction`` of train."""
        if val_name is not None:
            return sets[train_name], sets[val_name]
        data = sets[train_name]
        n = len(data)
        if n < 2:
            raise ValueError(f"split {train_name!r} has {n} image(s): too few to carve a validation set")
        n_val = min(max(1, round(n * self.hparams.val_fraction)), n - 1)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))  # (N,)
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        return _subset(data, train_idx), _subset(data, val_idx)

    def split_tensors(self, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """The decoded uint8 images (N, C, H, W) and labels (N,) of ``train``, ``val`` or ``test`` (after
        ``setup``; e.g. the reference data of an evaluation); at most the first ``limit`` of them.
        With ``disk`` or ``stream`` storage this decodes them now, so mind ``limit`` on a large split."""
        data = {"train": self._train, "val": self._val, "test": self._test}
        if split not in data:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if data[split] is None:
            stage = "test" if split == "test" else "fit"
            raise ValueError(f"the {split} split is not loaded: call setup({stage!r}) first, or the dataset has none")
        return _decoded(data[split], limit)

    @property
    def held_out_classes(self) -> list[int]:
        """Classes left out of train and validation (they appear only in test: anomaly detection)."""
        return list(self.hparams.held_out_classes or [])

    def _without_held_out(self, data: TensorPairs | ArrowImages) -> TensorPairs | ArrowImages:
        if not self.held_out_classes:
            return data
        labels = data.labels() if isinstance(data, ArrowImages) else data.tensors[1]  # (N,)
        keep = ~torch.isin(labels, torch.tensor(self.held_out_classes))  # (N,)
        return _subset(data, keep.nonzero().squeeze(1))

    def _loader(self, data: Split | None, stage: str, train: bool = False) -> DataLoader:
        if data is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        workers = self.hparams.num_workers
        kwargs = {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": torch.cuda.is_available()}
        if self.hparams.storage == "stream":
            epoch = lambda: self.trainer.current_epoch if self.trainer else 0  # noqa: E731 - read at each pass
            batches = self._train_batches if train else None
            kwargs.update(batch_size=self.hparams.batch_size, drop_last=train)
            return EpochStreamLoader(data, epoch, batches, **kwargs)
        return tensor_loader(data, self.hparams.batch_size, train, **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the train set; the last incomplete batch is dropped."""
        if self._train is not None and self.hparams.storage != "stream" and len(self._train) < self.hparams.batch_size:
            raise ValueError(
                f"the train set has {len(self._train)} images, fewer than batch_size "
                f"{self.hparams.batch_size}; lower --data.batch_size"
            )
        return self._loader(self._train, "fit", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self._val, "validate")

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order; an error when the dataset has no ``test_split``."""
        if self._test is None and self._splits:
            raise ValueError(
                f"{self.hparams.dataset!r} has no test split {self.hparams.test_split!r} "
                f"(splits: {', '.join(self._splits)}); set --data.test_split"
            )
        return self._loader(self._test, "test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """On the device: uint8 -> float in [-1, 1]; flips/crops/mutations only while the trainer is training."""
        x, y = batch
        x = to_model_space(x)  # (B, C, H, W)
        hp = self.hparams
        augments = hp.hflip or hp.random_crop_padding > 0 or hp.mutation_rate > 0
        if self.trainer is not None and self.trainer.training and augments:
            x = augment_images(
                x, hp.hflip, hp.random_crop_padding, hp.padding_mode, mutation_rate=hp.mutation_rate
            )  # (B, C, H, W)
        return x, y


def _subset(data: TensorPairs | ArrowImages, items: Tensor) -> TensorPairs | ArrowImages:
    """The items ``items`` (1-D int64) of an in-memory or memory-mapped split."""
    if isinstance(data, ArrowImages):
        return data.subset(items)
    return TensorPairs(*(t[items] for t in data.tensors))


def _decoded(data: Split, limit: int | None) -> tuple[Tensor, Tensor]:
    """All (or the first ``limit``) uint8 images (N, C, H, W) and labels (N,) of a split, decoded."""
    if isinstance(data, TensorPairs):
        images, labels = data.tensors
        return images[:limit], labels[:limit]
    if isinstance(data, ArrowImages):
        return data.__getitems__(list(range(len(data) if limit is None else min(limit, len(data)))))
    examples = list(data if limit is None else data.take(limit))
    if not examples:
        raise ValueError("the stream holds no examples")
    return stack_examples(examples)
