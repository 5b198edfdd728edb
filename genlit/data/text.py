"""Text corpora for autoregressive models: one stream of tokens per split, served as (x, y) blocks.

The source is a local text file, a list of them (concatenated in order, nothing added between), or a
Hugging Face dataset (Hub id, local dataset directory or parquet/arrow file) with a text column whose rows
are joined with a blank line (see :mod:`genlit.data.text_sources`). A plain text is split contiguously, as
nanoGPT does: the first ``1 - val_fraction`` of its characters train, the rest validates, and test is the
validation text. A dataset's own ``validation`` (else ``test``) split validates and its ``test`` split (else
validation) tests.

The tokenizer is built from the training text: a byte-level BPE is trained on it alone; a character
vocabulary also takes the characters of the held-out text (as nanoGPT's does), so validation always
encodes; the only thing it learns from them is that they exist. ``tokenizer_from`` takes another model's
tokenizer instead (a checkpoint, an exported folder or a tokenizer JSON): fine-tuning on a new corpus needs the
token ids the pre-trained model was trained with, which a tokenizer built from the new text would not give
(``--model.init_from CKPT --data.tokenizer_from CKPT``). ``storage`` says where the tokens live:

- ``memory`` (default): each split is read whole and encoded once into a 1-D int64 tensor kept in memory.
- ``disk``: each split is read and encoded a chunk at a time into a flat token file (uint16 or uint32,
  :mod:`genlit.data.token_files`), and batches are gathered from its memory map: corpora larger than memory,
  the same tokenizer, tokens and batches as ``memory``.
- ``stream``: a Hugging Face dataset read as it streams, tokenised on the fly by a BPE trained on a sample
  of its start (:mod:`genlit.data.text_stream`).

The tokenizer and the encoded splits are cached under ``cache_dir`` by a hash of the source's text (for a
stream, of the tokenizer's sample) and the settings, published atomically (the first writer wins): later runs
and every DDP rank load the same tokenizer and tokens, and a BPE is trained once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import get_args

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch import Tensor
from torch.utils.data import DataLoader

from genlit.data.storage import Storage, rank_and_world
from genlit.data.tensors import tensor_loader
from genlit.data.text_sources import SourceScan, carve_point, source_texts
from genlit.data.text_stream import StreamBlocks, TextStream, row_digest, stream_loader
from genlit.data.token_files import MANIFEST, TokenBlocks, TokenFile, open_token_files, write_token_files
from genlit.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    TokenizerName,
    build_tokenizer,
    read_tokenizer,
    tokenizer_from_json,
    with_mask_token,
)
from genlit.files import atomic_write, cache_root

_CACHE_VERSION = 1  # part of the cache key: bump when the cached format or the splitting changes
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}
_SPLITS = ("train", "val", "test")


class TextDataModule(L.LightningDataModule):
    """Token blocks of a text corpus for next-token prediction (see the module docstring for the splits).

    Args:
        source: a local text file, a list of them, or a Hugging Face dataset with column ``text_column``;
            ``~`` and ``$VARS`` are expanded (an unset variable is an error).
        tokenizer: ``char`` (one token per character) or ``bpe`` (byte-level BPE of ``bpe_vocab_size``
            tokens trained on the training text).
        block_size: tokens per training example (the model's context).
        batch_size: blocks per batch.
        val_fraction: share of a plain text held out (at its end) for validation.
        text_column: the column holding the text of a Hugging Face dataset.
        num_workers: DataLoader worker processes.
        cache_dir: where tokenizers and encoded splits are cached (default ``text`` in genlit's cache folder,
            :func:`genlit.files.cache_root`).
        storage: ``memory``, ``disk`` or ``stream`` (see the module docstring).
        shuffle_buffer: rows in the shuffle buffer of a stream's training split (1: stream order, exact resume).
        seed: the shuffle of a stream (the same on every rank; pass ``p`` reshuffles with ``set_epoch(p)``).
        val_rows: rows at the start of a stream's train split held out for validation when the dataset has
            no validation split (kept in memory as tokens and served as the other storages serve theirs).
        tokenizer_sample_chars: characters at the start of a stream's train split (after ``val_rows``) that
            its BPE is trained on.
        mask_token: add ``[MASK]`` to the tokenizer as its last id (what a masked language model needs; see
            :func:`genlit.data.tokenizers.with_mask_token`). The text's tokens are unchanged.
        tokenizer_from: use the tokenizer stored there instead of building one from the text: a language model's
            checkpoint, a folder written by ``genlit export`` or a tokenizer JSON file
            (:func:`genlit.data.tokenizers.read_tokenizer`); its kind must be ``tokenizer``'s, and a character
            vocabulary must hold every character of the text. For fine-tuning: the same path as ``init_from``.

    ``tokenizer``, ``vocab_size`` and ``block_size`` are available right after construction (the CLI links
    them into the model): the first access reads the source and builds (or loads) the tokenizer.
    ``prepare_data`` also encodes the splits into the cache; ``setup`` loads them (memory) or maps them (disk).
    Batches are tuples ``(x, y)`` of int64 (B, block_size) with ``y`` = ``x`` shifted by one token. The
    training loader draws blocks at random start offsets (every offset is one item); validation and test
    use the fixed, non-overlapping blocks at offsets 0, T, 2T, ..., served in a fixed scattered order so that
    ``limit_val_batches`` samples the whole split. A stream's training split is packed into blocks as it
    arrives and repeats without end (set ``max_steps``). A stream validates on the dataset's own validation
    split, streamed once in order, or, without one, on the first ``val_rows`` rows of train, held out of
    training and served like the other storages' validation blocks; it tests on its ``test`` split, else as it
    validates. A stream reads Hugging Face datasets only: text files are refused, naming ``storage: disk``.
    """

    def __init__(
        self,
        source: str | list[str],
        tokenizer: TokenizerName = "char",
        bpe_vocab_size: int = 2048,
        block_size: int = 256,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        text_column: str = "text",
        num_workers: int = 0,
        cache_dir: str | None = None,
        storage: Storage = "memory",
        shuffle_buffer: int = 1000,
        seed: int = 0,
        val_rows: int = 1000,
        tokenizer_sample_chars: int = 4_000_000,
        mask_token: bool = False,
        tokenizer_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_args()
        self._texts: dict[str, str] | None = None  # memory: split -> text, read on demand, dropped once encoded
        self._scan: SourceScan | None = None  # disk: the source's texts, hashed and measured
        self._stream: TextStream | None = None  # stream: the dataset and the start of its train split
        self._key: str | None = None
        self._tokenizer: Tokenizer | None = None
        self._given: Tokenizer | None = None  # the tokenizer of tokenizer_from, read once
        self._corpora: dict[str, Tensor | TokenFile] | None = None  # split -> (N,) token ids, after setup

    def _check_args(self) -> None:
        hp = self.hparams
        for name, allowed in (("tokenizer", get_args(TokenizerName)), ("storage", get_args(Storage))):
            if hp[name] not in allowed:
                raise ValueError(f"{name} {hp[name]!r} is not known; use one of {', '.join(allowed)}")
        if hp.tokenizer == "bpe":
            BPETokenizer.check_vocab_size(hp.bpe_vocab_size)
        if hp.storage == "stream" and hp.tokenizer == "char":
            raise ValueError(
                "tokenizer char needs the whole text for its vocabulary, which storage stream never reads; "
                "use --data.tokenizer bpe or --data.storage disk"
            )
        if hp.block_size < 1 or hp.batch_size < 1 or hp.num_workers < 0:
            raise ValueError(
                f"block_size ({hp.block_size}) and batch_size ({hp.batch_size}) must be >= 1 and "
                f"num_workers ({hp.num_workers}) >= 0"
            )
        if min(hp.shuffle_buffer, hp.val_rows, hp.tokenizer_sample_chars) < 1:
            raise ValueError("shuffle_buffer, val_rows and tokenizer_sample_chars must be >= 1")
        if not 0.0 < hp.val_fraction < 1.0:
            raise ValueError(f"val_fraction {hp.val_fraction} must lie strictly between 0 and 1")
        if not hp.source:
            raise ValueError("--data.source is empty; give a text file, a list of them or a Hugging Face dataset")

    @property
    def block_size(self) -> int:
        """Tokens per example (the model's context length)."""
        return self.hparams.block_size

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer, built from the training text on first access (or loaded from the cache)."""
        if self._tokenizer is None:
            path = self._cache_path("tokenizer.json")
            if not path.exists():
                built = self._build_tokenizer()
                with atomic_write(path, "w", encoding="utf-8", replace=False) as handle:
                    handle.write(built.to_json())
            self._tokenizer = tokenizer_from_json(path.read_text(encoding="utf-8"))  # the published one
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of token ids of :attr:`tokenizer` (the model's embedding and output size)."""
        return self.tokenizer.vocab_size

    def prepare_data(self) -> None:
        """Read the source, build the tokenizer and encode every split into the cache (once per node); a
        stream only needs its tokenizer."""
        storage = self.hparams.storage
        if storage == "stream":
            _ = self.tokenizer
        elif not self._cache_path("corpus.pt" if storage == "memory" else MANIFEST).exists():
            self._write_corpora()

    def setup(self, stage: str | None = None) -> None:
        """Load the encoded splits into memory (memory) or map them (disk), encoding them if ``prepare_data``
        did not; a stream holds only the validation rows it held out. Then check that the splits ``stage``
        uses hold at least one block."""
        if self._corpora is None:
            self._corpora = self._load_corpora()
            self._texts = None  # the tokens are all that is needed from now on
        for split in _STAGE_SPLITS.get(stage, _SPLITS):
            if split in self._corpora:
                self._check_length(split)

    def split_tokens(self, split: str) -> Tensor:
        """The encoded corpus (N,) int64 of ``train``, ``val`` or ``test`` (after ``setup``); with ``disk``
        storage this reads the whole split into memory."""
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if self._corpora is None:
            raise RuntimeError("call setup() before asking for the encoded splits")
        if split not in self._corpora:
            raise ValueError(f"the {split} split is streamed, never held as tokens; use --data.storage disk")
        corpus = self._corpora[split]
        return corpus.tensor() if isinstance(corpus, TokenFile) else corpus

    def train_dataloader(self) -> DataLoader:
        """Batches of blocks at random start offsets (shuffled); the last incomplete batch is dropped. A
        stream's batches are packed as its rows arrive, without end."""
        if self.hparams.storage == "stream":
            return self._stream_loader("train")
        return self._loader("train", stride=1, train=True)

    def val_dataloader(self) -> DataLoader:
        """Fixed, non-overlapping validation blocks, served in a fixed scattered order (see :class:`TokenBlocks`);
        a streamed validation split's blocks in order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Fixed, non-overlapping test blocks, served in a fixed scattered order."""
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        if self.hparams.storage == "stream" and self._corpora is not None and split not in self._corpora:
            return self._stream_loader(split)
        return self._loader(split, stride=self.hparams.block_size)

    def _loader(self, split: str, stride: int, train: bool = False) -> DataLoader:
        self._check_length(split)
        seed = None if train else 0
        blocks = TokenBlocks(self._corpora[split], self.hparams.block_size, stride, scatter_seed=seed)
        if train and len(blocks) < self.hparams.batch_size:
            raise ValueError(
                f"the train split has {len(blocks)} blocks, fewer than batch_size {self.hparams.batch_size}; "
                "lower --data.batch_size or --data.block_size, or give more text"
            )
        workers = self.hparams.num_workers
        pin = torch.cuda.is_available()
        return tensor_loader(
            blocks, self.hparams.batch_size, train, num_workers=workers, persistent_workers=workers > 0, pin_memory=pin
        )

    def _stream_loader(self, split: str) -> DataLoader:
        """This rank's share of a streamed split: training shuffled and repeating, the others once in order."""
        hp, stream, train = self.hparams, self._text_stream(), split == "train"
        if train and self.trainer is not None and self.trainer.max_steps < 0:
            if not any(isinstance(callback, Timer) for callback in self.trainer.callbacks):
                raise ValueError("storage stream repeats the training split without end; set --trainer.max_steps")
        held_out = frozenset(row_digest(row) for row in stream.held_out) if train else frozenset()
        blocks = StreamBlocks(
            stream.rows(split, *rank_and_world(self.trainer)),
            hp.text_column,
            self.tokenizer,
            hp.block_size,
            seed=hp.seed,
            shuffle_buffer=hp.shuffle_buffer if train else None,
            held_out=held_out,
        )
        return stream_loader(blocks, hp.batch_size, hp.num_workers)

    def _check_length(self, split: str) -> None:
        """One clear error when ``split`` is too short for one block (block_size + 1 tokens)."""
        if self._corpora is None:
            raise RuntimeError("call setup() before asking for the encoded splits")
        tokens, need = len(self._corpora[split]), self.hparams.block_size + 1
        if tokens < need:
            more = "raise --data.val_rows" if self.hparams.storage == "stream" else "give more text"
            raise ValueError(
                f"the {split} split has {tokens} tokens, too few for block_size {need - 1} (a block needs "
                f"{need}); lower --data.block_size or {more}"
            )

    def split_text(self, split: str) -> str:
        """The raw text of ``train``, ``val`` or ``test`` (read whole from the source; no tokenizer involved)."""
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if self.hparams.storage == "stream":
            raise ValueError("a streamed dataset's splits are never read whole; use --data.storage memory or disk")
        return self._split_texts()[split]

    # ------------------------------------------------------------------------------------------ source
    def _split_texts(self) -> dict[str, str]:
        """The text of each split (``test`` may be the ``val`` object itself), read once."""
        if self._texts is None:
            texts = source_texts(self.hparams.source, self.hparams.text_column)
            if "val" not in texts:
                self._texts = self._carve(texts["train"].read())
            else:
                read = {id(text): text.read() for text in texts.values()}
                self._texts = {split: read[id(text)] for split, text in texts.items()}
        return self._texts

    def _carve(self, text: str) -> dict[str, str]:
        """Contiguous split: the first ``1 - val_fraction`` of the characters train, the rest validates/tests."""
        n = carve_point(len(text), self.hparams.val_fraction, self.hparams.source)
        val = text[n:]
        return {"train": text[:n], "val": val, "test": val}

    def _source_scan(self) -> SourceScan:
        """The source's texts, hashed and measured (storage disk), scanned once."""
        if self._scan is None:
            hp = self.hparams
            self._scan = SourceScan(hp.source, hp.text_column, hp.val_fraction, self._settings())
        return self._scan

    def _text_stream(self) -> TextStream:
        """The streamed dataset and the start of its train split (storage stream), read once."""
        if self._stream is None:
            hp = self.hparams
            self._stream = TextStream(hp.source, hp.text_column, hp.val_rows, hp.tokenizer_sample_chars)
        return self._stream

    def _build_tokenizer(self) -> Tokenizer:
        """A tokenizer built from the training text as ``storage`` reads it (see the module docstring), or the one
        of ``tokenizer_from`` (checked against the text), with ``[MASK]`` added when ``mask_token`` asks for it."""
        if self.hparams.tokenizer_from:
            tokenizer = self._given_tokenizer()
            self._check_covers(tokenizer)
        else:
            tokenizer = self._build_text_tokenizer()
        return with_mask_token(tokenizer) if self.hparams.mask_token else tokenizer

    def _given_tokenizer(self) -> Tokenizer:
        """The tokenizer of ``tokenizer_from``, read once; one clear error when its kind is not ``tokenizer``."""
        if self._given is None:
            hp = self.hparams
            given = read_tokenizer(hp.tokenizer_from, option="--data.tokenizer_from")
            kind = "char" if isinstance(given, CharTokenizer) else "bpe"
            if kind != hp.tokenizer:
                raise ValueError(f"--data.tokenizer_from {hp.tokenizer_from} holds a {kind} tokenizer but "
                                 f"--data.tokenizer is {hp.tokenizer}; set --data.tokenizer {kind}")  # fmt: skip
            self._given = given
        return self._given

    def _check_covers(self, tokenizer: Tokenizer) -> None:
        """One clear error when a given character vocabulary lacks characters of the text (a BPE covers any)."""
        if not isinstance(tokenizer, CharTokenizer) or self.hparams.storage == "stream":
            return
        if self.hparams.storage == "memory":
            present = set().union(*map(set, self._split_texts().values()))
        else:
            present = set(self._source_scan().characters())
        missing = sorted(present - set(tokenizer.chars))
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(f"--data.tokenizer_from {self.hparams.tokenizer_from} has no token for {len(missing)} "
                             f"character(s) of the text: {shown}; the model it comes from cannot read this text "
                             "(remove them from the text, or pre-train on a text that has them)")  # fmt: skip

    def _build_text_tokenizer(self) -> Tokenizer:
        hp = self.hparams
        if hp.storage == "stream":
            return BPETokenizer.train(self._text_stream().sample, hp.bpe_vocab_size)
        if hp.storage == "memory":
            texts = self._split_texts()
            held_out = [texts["val"]] if texts["test"] is texts["val"] else [texts["val"], texts["test"]]
            return build_tokenizer(hp.tokenizer, texts["train"], hp.bpe_vocab_size, held_out)
        scan = self._source_scan()
        if hp.tokenizer == "bpe":
            return BPETokenizer.train(scan.split_chunks()["train"](), hp.bpe_vocab_size)
        return CharTokenizer.from_text(scan.characters())  # every text's characters, as memory's vocabulary

    # ------------------------------------------------------------------------------------------- cache
    def _cache_path(self, name: str) -> Path:
        """``<cache_dir>/<key>/<name>``: the key hashes the source's text and the tokenizer settings."""
        raw = self.hparams.cache_dir or str(cache_root() / "text")
        root = os.path.expandvars(os.path.expanduser(raw))
        if "$" in root:
            raise ValueError(f"--data.cache_dir {raw!r} names an unset environment variable; export it or give a path")
        return Path(root) / self._cache_key() / name

    def _settings(self) -> dict:
        """What besides the text decides the tokenizer and the tokens (part of the cache key)."""
        hp = self.hparams
        settings = {"version": _CACHE_VERSION, "tokenizer": hp.tokenizer, "val_fraction": hp.val_fraction}
        if hp.tokenizer == "bpe":
            settings["bpe_vocab_size"] = hp.bpe_vocab_size
        if hp.mask_token:
            settings["mask_token"] = True
        if hp.tokenizer_from:  # the given tokenizer itself, not its path: another file, another cache entry
            settings["tokenizer_from"] = hashlib.sha256(self._given_tokenizer().to_json().encode()).hexdigest()[:24]
        if hp.storage == "stream":
            settings.update(storage="stream", val_rows=hp.val_rows, sample_chars=hp.tokenizer_sample_chars)
        elif hp.storage == "disk":
            settings["storage"] = "disk"
        return settings

    def _cache_key(self) -> str:
        if self._key is None:
            storage = self.hparams.storage
            if storage == "disk":
                self._key = self._source_scan().key
            else:
                digest = hashlib.sha256(json.dumps(self._settings(), sort_keys=True).encode())
                texts = {"sample": self._text_stream().sample} if storage == "stream" else self._split_texts()
                for split, text in texts.items():
                    digest.update(f"\0{split}:{len(text)}\0".encode())
                    digest.update(text.encode())
                self._key = digest.hexdigest()[:24]
        return self._key

    def _write_corpora(self) -> None:
        """Encode every split with :attr:`tokenizer` and publish it to the cache: ``{split: (N,) int64}`` in
        one file (memory), or a flat token file per split and their manifest (disk)."""
        tokenizer = self.tokenizer
        if self.hparams.storage == "disk":
            splits = self._source_scan().split_chunks()
            write_token_files(self._cache_path(""), splits, tokenizer.encode, tokenizer.vocab_size)
            return
        texts, encoded = self._split_texts(), {}
        for split, text in texts.items():
            if split == "test" and text is texts["val"]:
                encoded[split] = encoded["val"]  # one tensor, saved once
            else:
                encoded[split] = torch.tensor(tokenizer.encode(text), dtype=torch.int64)  # (N,)
        with atomic_write(self._cache_path("corpus.pt"), replace=False) as handle:
            torch.save(encoded, handle)

    def _load_corpora(self) -> dict[str, Tensor | TokenFile]:
        """The splits held as tokens, from the cache (written first if missing); a stream's held-out rows."""
        storage = self.hparams.storage
        if storage == "stream":
            return self._text_stream().held_out_tokens(self.tokenizer)
        path = self._cache_path("corpus.pt" if storage == "memory" else MANIFEST)
        if not path.exists():
            self._write_corpora()
        if storage == "disk":
            return open_token_files(path.parent)
        return torch.load(path, weights_only=True)  # split -> (N,) int64
