"""Two image domains A and B without pairs, for unpaired translation (CycleGAN).

The domains come from two datasets (``domain_a`` and ``domain_b``: each a Hub id or a local copy, whatever
:class:`~genlit.data.images.ImageDataModule` reads), or from one ``dataset`` whose rows are split in two: by the
values of its label column (``values_a`` / ``values_b``, e.g. digits 0-4 against 5-9), or else by index (the first
half of each split is A, the second half B). Either domain may then be rendered in code
(``render_a`` / ``render_b``: a :class:`~genlit.data.domains.DomainRenderer` such as
:class:`~genlit.data.domains.ColouredDigits`), which makes a second domain out of images that domain A never uses.

``prepare_data`` downloads or converts each source and decodes the splits in use into the ``datasets`` cache
(through :class:`~genlit.data.images.ImageDataModule`, so the decoding is the same and cached by fingerprint);
``setup`` reads them into uint8 tensors once, splits and renders the domains and carves a seeded ``val_fraction``
of each domain's train rows for validation. Training batches are ``(a, b)``: a batch of each domain, each domain
shuffled on its own (two loaders combined, the longer one sets the epoch, the shorter cycles; under DDP each has its
own seed), converted to [-1, 1] on the device. Validation and test run the two domains one after the other
(loader 0: A, loader 1: B), as ``(images, labels)``. Labels (-1 without a label column) never reach training: they
are for evaluation (:meth:`UnpairedImageDataModule.split_tensors`).

The domains' shapes ``shape_a`` and ``shape_b`` (C, H, W) flow into the model through the CLI's argument links.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from genlit.data.domains import DomainRenderer
from genlit.data.hub import load_raw_dataset, resolve_dataset
from genlit.data.image_sources import ResizeMode
from genlit.data.images import ImageDataModule, to_model_space
from genlit.data.storage import rank_and_world
from genlit.data.tensors import TensorPairs, keep_batch, tensor_loader

Domain = Literal["A", "B"]
Stage = Literal["train", "val", "test"]
DOMAINS: tuple[Domain, ...] = ("A", "B")


class UnpairedImageDataModule(L.LightningDataModule):
    """Unpaired batches ``(a, b)`` of two image domains (module docstring).

    Args:
        domain_a / domain_b: Hub id or local path of each domain's dataset (both, or neither and ``dataset``).
        dataset: one dataset holding both domains, split by ``values_a`` / ``values_b`` or by index halves.
        values_a / values_b: label-column values of A's and B's rows in ``dataset`` (disjoint); None: by index,
            the first half of each split is A, the second B.
        render_a / render_b: renderer making the domain's images from its source images (a built domain).
        channels_a / channels_b: channels the domain's source images are decoded to: 1 (grey) or 3 (RGB); a
            rendered domain's images have the renderer's ``channels``.
        image_size: images are resized (or centre-cropped, ``resize``) to this square size.
        image_column / label_column: the columns of the images and of the labels (None: unlabelled).
        train_split / test_split: split names of the sources (no test split: ``genlit test`` refuses).
        val_fraction: share of each domain's train rows held out for validation, drawn with ``seed``.
        resize: ``resize`` or ``center_crop`` then resize.
        batch_size: images of each domain per batch.
        seed: seed of the validation carve (and, under DDP, of the two domains' shuffles).
        num_workers: DataLoader workers.
        cache_dir: the ``datasets`` cache (default ``$HF_DATASETS_CACHE``).
    """

    def __init__(
        self,
        domain_a: str | None = None,
        domain_b: str | None = None,
        dataset: str | None = None,
        values_a: list[int] | None = None,
        values_b: list[int] | None = None,
        render_a: DomainRenderer | None = None,
        render_b: DomainRenderer | None = None,
        channels_a: Literal[1, 3] = 1,
        channels_b: Literal[1, 3] = 1,
        image_size: int = 28,
        image_column: str = "image",
        label_column: str | None = "label",
        train_split: str = "train",
        test_split: str | None = "test",
        val_fraction: float = 0.05,
        resize: ResizeMode = "resize",
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.renderers: dict[Domain, DomainRenderer | None] = {"A": render_a, "B": render_b}
        self._check_args()
        self._data: dict[tuple[Domain, Stage], TensorPairs] = {}
        self._rows: dict[tuple[Domain, Stage], Tensor] = {}  # each item's row in its source split

    # ------------------------------------------------------------------------------------------ options
    def _check_args(self) -> None:
        hp = self.hparams
        given = [name for name in ("domain_a", "domain_b") if hp[name] is not None]
        if hp.dataset is None and len(given) < 2:
            missing = "domain_b" if given == ["domain_a"] else "domain_a"
            raise ValueError(
                f"UnpairedImageDataModule has no domain {missing[-1].upper()}: set --data.{missing} (a Hub id or local "
                "path), or give --data.dataset to split one dataset into both domains"
            )
        if hp.dataset is not None and given:
            raise ValueError("give either --data.dataset (one dataset split in two) or --data.domain_a and "
                             "--data.domain_b (two datasets), not both")  # fmt: skip
        self._check_values()
        for name, allowed in (("channels_a", (1, 3)), ("channels_b", (1, 3)), ("resize", get_args(ResizeMode))):
            if hp[name] not in allowed:
                raise ValueError(f"{name} {hp[name]!r} is not supported; use one of {allowed}")
        if hp.image_size < 1 or hp.batch_size < 1 or hp.num_workers < 0:
            raise ValueError("image_size and batch_size must be >= 1 and num_workers >= 0")
        if not 0.0 < hp.val_fraction < 1.0:
            raise ValueError(f"val_fraction {hp.val_fraction} must lie strictly between 0 and 1")
        for domain, renderer in self.renderers.items():
            channels = hp[f"channels_{domain.lower()}"]
            if renderer is not None and renderer.in_channels != channels:
                raise ValueError(f"{type(renderer).__name__} renders {renderer.in_channels}-channel images; set "
                                 f"--data.channels_{domain.lower()} {renderer.in_channels}")  # fmt: skip

    def _check_values(self) -> None:
        hp = self.hparams
        values = [hp.values_a, hp.values_b]
        if all(v is None for v in values):
            return
        if hp.dataset is None or any(v is None for v in values) or hp.label_column is None:
            raise ValueError("values_a and values_b split one --data.dataset by its label column: give both, "
                             "with --data.dataset and a --data.label_column")  # fmt: skip
        if set(hp.values_a) & set(hp.values_b) or not (hp.values_a and hp.values_b):
            raise ValueError(f"values_a {hp.values_a} and values_b {hp.values_b} must be non-empty and disjoint "
                             "(no image may belong to both domains)")  # fmt: skip

    @property
    def shape_a(self) -> tuple[int, int, int]:
        """(C, H, W) of domain A's images as the model sees them."""
        return self._shape("A")

    @property
    def shape_b(self) -> tuple[int, int, int]:
        """(C, H, W) of domain B's images as the model sees them."""
        return self._shape("B")

    def _shape(self, domain: Domain) -> tuple[int, int, int]:
        renderer, size = self.renderers[domain], self.hparams.image_size
        channels = renderer.channels if renderer is not None else self.hparams[f"channels_{domain.lower()}"]
        return (channels, size, size)

    # ------------------------------------------------------------------------------------------- sources
    def _source(self, domain: Domain) -> tuple[str, str]:
        """(resolved dataset path or Hub id, the option that names it) of a domain."""
        hp = self.hparams
        option = "dataset" if hp.dataset is not None else f"domain_{domain.lower()}"
        return resolve_dataset(hp[option], f"--data.{option}"), option

    def _decoder(self, source: str, split: str, channels: int) -> ImageDataModule:
        """An ImageDataModule that decodes the whole split ``split`` of ``source``, in row order, and nothing else
        (its train and validation splits are both ``split``: no carve, no test)."""
        hp = self.hparams
        return ImageDataModule(source, hp.image_column, hp.label_column, hp.image_size, channels, num_classes=0,
                               batch_size=hp.batch_size, train_split=split, val_split=split, test_split=None,
                               resize=hp.resize, cache_dir=hp.cache_dir)  # fmt: skip

    def _has_split(self, source: str, split: str, option: str) -> bool:
        return split in load_raw_dataset(source, self.hparams.cache_dir, f"--data.{option}")

    def _splits(self, stage: str | None) -> list[tuple[Stage, str]]:
        """(kind, source split) pairs that ``stage`` uses: train (carved into val) and/or test."""
        hp = self.hparams
        fit, test = stage in (None, "fit", "validate"), stage in (None, "test") and hp.test_split is not None
        return [("train", hp.train_split)] * fit + [("test", hp.test_split)] * test

    def prepare_data(self) -> None:
        """Download or convert each domain's source and decode the splits in use into the ``datasets`` cache."""
        for domain in DOMAINS:
            source, option = self._source(domain)
            for kind, split in self._splits(None):
                if kind == "train" or self._has_split(source, split, option):
                    self._decoder(source, split, self.hparams[f"channels_{domain.lower()}"]).prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Read the decoded splits into uint8 tensors, split and render the domains, carve validation."""
        for kind, split in self._splits(stage):
            if ("A", kind) in self._data:
                continue
            decoded: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
            for domain in DOMAINS:
                source, option = self._source(domain)
                if kind == "test" and not self._has_split(source, split, option):
                    continue
                channels = self.hparams[f"channels_{domain.lower()}"]
                if (source, channels) not in decoded:
                    decoder = self._decoder(source, split, channels)
                    decoder.setup("fit")
                    decoded[source, channels] = decoder.split_tensors("train")  # (N, C, H, W) uint8, (N,)
                rows = self._domain_rows(domain, decoded[source, channels][1], source, split)
                self._store(domain, kind, split, rows, *decoded[source, channels])

    def _domain_rows(self, domain: Domain, labels: Tensor, source: str, split: str) -> Tensor:
        """The rows (M,) of a source split that belong to ``domain``: all (two datasets), its label values, or its
        index half; one clear error when none does."""
        hp = self.hparams
        n = len(labels)
        if hp.dataset is None:
            rows = torch.arange(n)
        elif hp.values_a is not None:
            values = torch.as_tensor(hp[f"values_{domain.lower()}"])
            rows = torch.isin(labels, values).nonzero().squeeze(1)  # (M,)
        else:
            rows = torch.arange(n // 2) if domain == "A" else torch.arange(n // 2, n)
        if len(rows) == 0:
            if hp.values_a is not None:
                fix = f"values_{domain.lower()}"
                what = f"with {hp.label_column} in {hp[fix]}"
            else:
                fix, what = self._source(domain)[1], "at all"
            raise ValueError(f"domain {domain} is empty: split {split!r} of {source!r} has no image {what}; "
                             f"check --data.{fix}")  # fmt: skip
        return rows

    def _store(self, domain: Domain, kind: Stage, split: str, rows: Tensor, images: Tensor, labels: Tensor) -> None:
        """Render the domain's rows and keep them (train: minus a seeded ``val_fraction``, which becomes val)."""
        images, labels = images[rows], labels[rows]  # (M, C, H, W), (M,)
        renderer = self.renderers[domain]
        if renderer is not None:
            images = renderer(images, rows, split)  # (M, C', H, W)
        parts = {kind: torch.arange(len(rows))}
        if kind == "train":
            if len(rows) < 2:
                raise ValueError(f"domain {domain} has {len(rows)} training image(s): too few to carve validation")
            n_val = min(max(1, round(len(rows) * self.hparams.val_fraction)), len(rows) - 1)
            perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.hparams.seed))  # (M,)
            parts = {"val": perm[:n_val].sort().values, "train": perm[n_val:].sort().values}
        for name, items in parts.items():
            self._data[domain, name] = TensorPairs(images[items], labels[items])
            self._rows[domain, name] = rows[items]

    # ------------------------------------------------------------------------------------------- access
    def split_tensors(self, domain: Domain, split: Stage) -> tuple[Tensor, Tensor]:
        """A domain's uint8 images (N, C, H, W) and labels (N,) of ``train``, ``val`` or ``test`` (after ``setup``):
        e.g. the digit labels an evaluation compares translations with."""
        return self._split(domain, split).tensors

    def source_rows(self, domain: Domain, split: Stage) -> Tensor:
        """The row (N,) of each of a domain's images in its source split (train rows for ``train`` and ``val``)."""
        self._split(domain, split)
        return self._rows[domain, split]

    def examples(self, num: int) -> dict[str, Tensor]:
        """The first ``num`` validation images of each domain in [-1, 1]: ``{"A": (n, *shape_a), "B": ...}``
        (the fixed inputs of :class:`~genlit.callbacks.translation_grid.TranslationGrid`)."""
        return {d: to_model_space(self._split(d, "val").tensors[0][:num]) for d in DOMAINS}

    def _split(self, domain: Domain, split: Stage) -> TensorPairs:
        if domain not in DOMAINS or split not in get_args(Stage):
            raise ValueError(f"unknown domain {domain!r} or split {split!r}; use A or B, and train, val or test")
        if (domain, split) not in self._data:
            stage = "test" if split == "test" else "fit"
            raise ValueError(f"the {split} split of domain {domain} is not loaded: call setup({stage!r}) first, or "
                             "the source has none")  # fmt: skip
        return self._data[domain, split]

    # ----------------------------------------------------------------------------------------- loaders
    def train_dataloader(self) -> CombinedLoader:
        """Batches ``{"A": ..., "B": ...}`` of the two domains, each shuffled on its own, the last partial batch
        of each dropped; the longer domain sets the epoch (``max_size_cycle``)."""
        loaders = {domain: self._train_loader(domain, offset) for offset, domain in enumerate(DOMAINS)}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _train_loader(self, domain: Domain, offset: int) -> StatefulDataLoader:
        data, hp = self._split(domain, "train"), self.hparams
        if len(data) < hp.batch_size:
            raise ValueError(f"domain {domain} has {len(data)} training images, fewer than batch_size "
                             f"{hp.batch_size}; lower --data.batch_size")  # fmt: skip
        kwargs = {"num_workers": hp.num_workers, "persistent_workers": hp.num_workers > 0}
        rank, world = rank_and_world(self.trainer)
        if world == 1:
            return tensor_loader(data, hp.batch_size, train=True, **kwargs)
        # a sampler of our own: Lightning's would give both domains the same seed, hence the same permutation
        sampler = DistributedSampler(data, world, rank, shuffle=True, seed=hp.seed + offset, drop_last=True)
        return StatefulDataLoader(data, hp.batch_size, sampler=sampler, drop_last=True, collate_fn=keep_batch, **kwargs)

    def _eval_loader(self, split: Stage) -> CombinedLoader:
        """Loader 0: domain A's images, loader 1: domain B's, one after the other, in a fixed order."""
        loaders = {domain: tensor_loader(self._split(domain, split), self.hparams.batch_size, train=False)
                   for domain in DOMAINS}  # fmt: skip
        return CombinedLoader(loaders, mode="sequential")

    def val_dataloader(self) -> CombinedLoader:
        """Validation images of A (loader 0), then of B (loader 1)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> CombinedLoader:
        """Test images of A (loader 0), then of B (loader 1); an error when the sources have no ``test_split``."""
        return self._eval_loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """On the device: uint8 -> float in [-1, 1]; a training batch becomes ``(a, b)``, an evaluation batch
        ``(images, labels)``."""
        if isinstance(batch, dict):
            return to_model_space(batch["A"][0]), to_model_space(batch["B"][0])  # (B, *shape_a), (B, *shape_b)
        images, labels = batch
        return to_model_space(images), labels
