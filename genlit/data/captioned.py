"""Captioned images for text-to-image models: an image column and a text column, or captions made from labels.

:class:`CaptionedImageDataModule` reads images as :class:`~genlit.data.images.ImageDataModule` does (Hub id, local
parquet or imagefolder; decoded once into memory) and a caption per image: from a text column, or, for a labelled
dataset without captions such as MNIST, generated in code from the labels by the templates of
:mod:`genlit.data.captions` (nothing is written to disk; image i of a split always gets the same caption under
``caption_seed``). The test split is captioned with the held-out templates by default, so ``test/loss`` measures
whether the model follows phrasings it never trained on.

Batches are ``(images, ids)``: ids (B, block_size) int64 are the captions' token ids, padded with
:data:`~genlit.data.captions.PAD` (-1), so the padding mask is ``ids >= 0``. The tokenizer is built offline: a
character vocabulary of the templates' alphabet (generated captions) or of the training captions (a text column),
or a Hugging Face model's tokenizer by id for a frozen pretrained text encoder. The model stores it in its
checkpoint, so sampling with a prompt needs no dataset.
"""

from __future__ import annotations

import inspect
from typing import Literal

import datasets
import torch
from torch import Tensor

from genlit.data.captions import (
    PretrainedTokenizer,
    WordTokenizer,
    caption_alphabet,
    caption_vocabulary,
    captions_for,
    pack_texts,
)
from genlit.data.image_sources import ResizeMode
from genlit.data.images import ImageDataModule
from genlit.data.tensors import TensorPairs
from genlit.data.tokenizers import CharTokenizer


class CaptionedImageDataModule(ImageDataModule):
    """Images with captions (see the module docstring); memory storage.

    The image arguments (dataset, image_column, image_size, channels, batch_size, splits, val_fraction, resize,
    hflip, seed, num_workers, max_memory_gb, cache_dir, train_limit) are :class:`ImageDataModule`'s.

    Args:
        text_column: the column of captions (strings); None: generate captions from ``caption_labels``.
        caption_labels: the integer label column (digits 0..9) captions are generated from when ``text_column``
            is None (MNIST: ``label``).
        caption_seed: seed of the generated captions (image i of a split gets the caption of (i, seed)).
        test_captions: the templates of the test split's generated captions: ``held_out`` (default: measures
            generalisation to unseen phrasings) or ``train``.
        tokenizer: ``char`` (a character vocabulary built offline), ``word`` (a word vocabulary of the training
            captions, unknown words read as ``[UNK]``: :class:`~genlit.data.captions.WordTokenizer`) or a Hugging
            Face model id whose tokenizer is in the local cache (for a frozen ``HFTextEncoder`` of the same model).
        block_size: tokens per caption (longer captions are cut; prompts longer than this are refused).
    """

    def __init__(
        self,
        dataset: str,
        image_column: str = "image",
        text_column: str | None = "text",
        caption_labels: str | None = None,
        image_size: int = 28,
        channels: Literal[1, 3] = 1,
        batch_size: int = 64,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = "test",
        val_fraction: float = 0.05,
        resize: ResizeMode = "resize",
        hflip: bool = False,
        seed: int = 0,
        caption_seed: int = 0,
        test_captions: Literal["held_out", "train"] = "held_out",
        tokenizer: str = "char",
        block_size: int = 48,
        num_workers: int = 0,
        max_memory_gb: float = 8.0,
        cache_dir: str | None = None,
        train_limit: int | None = None,
    ) -> None:
        if (text_column is None) == (caption_labels is None):
            raise ValueError("give exactly one of text_column (captions in the data) and caption_labels (captions "
                             "generated from that label column)")  # fmt: skip
        if test_captions not in ("held_out", "train") or block_size < 1:
            raise ValueError(f"test_captions must be held_out or train and block_size >= 1, got {test_captions!r} "
                             f"and {block_size}")  # fmt: skip
        super().__init__(dataset, image_column, None, image_size, channels, 0, batch_size, train_split, val_split,
                         test_split, val_fraction, resize, hflip, seed=seed, num_workers=num_workers,
                         max_memory_gb=max_memory_gb, cache_dir=cache_dir, train_limit=train_limit)  # fmt: skip
        self._texts: dict[str, list[str]] = {}
        self._tokenizer = None

    def _check_args(self, num_classes: int | None) -> None:
        """Lightning records this class's arguments only: the image options it does not take keep their defaults
        (no labels: the captions are the condition), then the images' checks."""
        for name, param in inspect.signature(ImageDataModule.__init__).parameters.items():
            if name not in self.hparams and param.default is not param.empty and name != "num_classes":
                self.hparams[name] = param.default
        self.hparams["label_column"] = None
        super()._check_args(num_classes)

    # ------------------------------------------------------------------------------------ the tokenizer
    @property
    def tokenizer(self) -> CharTokenizer | WordTokenizer | PretrainedTokenizer:
        """The captions' tokenizer (built once: from the templates, the training captions or a model id)."""
        if self._tokenizer is None:
            hp = self.hparams
            if hp.tokenizer not in ("char", "word"):
                self._tokenizer = PretrainedTokenizer(hp.tokenizer)
            elif hp.text_column is None:
                generated = hp.tokenizer == "char"
                self._tokenizer = (
                    CharTokenizer(caption_alphabet()) if generated else WordTokenizer.train(caption_vocabulary())
                )
            else:
                raw = self._load_raw()
                texts = self._read_texts(raw[hp.train_split], hp.train_split)
                if hp.tokenizer == "word":
                    self._tokenizer = WordTokenizer.train(texts)
                else:
                    self._tokenizer = CharTokenizer.from_text(" ".join(t.lower() for t in texts))
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary (linked to the model's ``vocab_size``)."""
        return self.tokenizer.vocab_size

    @property
    def block_size(self) -> int:
        """Tokens per caption (linked to the model's ``block_size``)."""
        return self.hparams.block_size

    # ------------------------------------------------------------------------------------ captions
    def _read_texts(self, ds: datasets.Dataset, split: str) -> list[str]:
        """The captions of a split's rows: its text column, or generated from its label column."""
        hp = self.hparams
        column = hp.text_column or hp.caption_labels
        if column not in ds.column_names:
            option = "text_column" if hp.text_column else "caption_labels"
            raise ValueError(
                f"column {column!r} not in split {split!r} of {hp.dataset!r} (columns: {', '.join(ds.column_names)}); "
                f"set --data.{option}"
            )
        values = ds.select_columns([column]).with_format("arrow")[:].column(0).to_pylist()
        if hp.text_column is not None:
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"text column {column!r} of {hp.dataset!r} must hold strings without missing values")
            return values
        if not all(isinstance(v, int) and 0 <= v <= 9 for v in values):
            raise ValueError(f"caption_labels column {column!r} must hold digits 0..9 to generate captions from")
        held_out = split == hp.test_split and hp.test_captions == "held_out"
        return captions_for(values, hp.caption_seed, held_out)

    def _tensors(self, ds: datasets.Dataset, split: str) -> tuple[Tensor, Tensor]:
        """The decoded images (N, C, H, W) and their row numbers (N,) (the captions are looked up by row)."""
        images, _ = super()._tensors(ds, split)
        self._texts[split] = self._read_texts(ds, split)
        return images, torch.arange(len(images))

    def setup(self, stage: str | None = None) -> None:
        """The image splits, then each row number replaced by its caption's token ids (N, block_size)."""
        if self.hparams.storage != "memory":
            raise ValueError("CaptionedImageDataModule keeps its images in memory (storage: memory)")
        super().setup(stage)
        train_name, val_name, test_name = self._split_names(self._load_raw())
        for attr, name in (("_train", train_name), ("_val", val_name or train_name), ("_test", test_name)):
            data = getattr(self, attr)
            if data is not None and data.tensors[1].dim() == 1:  # rows not yet captioned
                images, rows = data.tensors
                texts = [self._texts[name][int(r)] for r in rows]
                setattr(self, attr, TensorPairs(images, pack_texts(self.tokenizer, texts, self.hparams.block_size)))

    def split_texts(self, split: str) -> list[str]:
        """The captions of a split of the dataset (by its name: ``train``, ``test``), in row order, after setup."""
        return list(self._texts[split])
