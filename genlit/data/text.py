"""Text corpora for autoregressive models: one stream of tokens per split, served as (x, y) blocks.

The source is a local text file, a list of them (concatenated in order, nothing added between), or a
Hugging Face dataset (Hub id, local dataset directory or parquet/arrow file) with a text column whose rows
are joined with a blank line. A plain text is split contiguously, as nanoGPT does: the first
``1 - val_fraction`` of its characters train, the rest validates, and test is the validation text. A
dataset's own ``validation`` (else ``test``) split validates and its ``test`` split (else validation) tests.

The tokenizer is built from the training text: a byte-level BPE is trained on it alone; a character
vocabulary also takes the characters of the held-out text (as nanoGPT's does), so validation always
encodes; the only thing it learns from them is that they exist. Each split is encoded once into a 1-D
int64 tensor kept in memory. The tokenizer and the encoded splits are cached under ``cache_dir`` by a hash
of the split texts and the tokenizer settings, published atomically (the first writer wins): later runs
and every DDP rank load the same tokenizer, and a BPE is trained once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlit.data.hub import load_raw_dataset, resolve_dataset
from genlit.data.tensors import tensor_loader
from genlit.data.tokenizers import BPETokenizer, Tokenizer, TokenizerName, build_tokenizer, tokenizer_from_json
from genlit.files import atomic_write

if TYPE_CHECKING:  # imported where used (Hub and dataset sources): `datasets` takes about 2 s to import
    import datasets

SOURCE_OPTION = "--data.source"
_CACHE_VERSION = 1  # part of the cache key: bump when the cached format or the splitting changes
_DEFAULT_CACHE = "~/.cache/genlit/text"
_DATASET_SUFFIXES = (".parquet", ".arrow")  # single files read as datasets (with a text column)
# a missing source with one of these suffixes is a missing file, not a Hub id
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".tex", ".csv", ".tsv", ".json", ".jsonl", ".html", ".xml")
_VALIDATION_NAMES = ("validation", "valid", "val", "test")  # a dataset's split used for validation, first found
_ROW_SEPARATOR = "\n\n"  # between the rows of a dataset's text column
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}


class TokenBlocks(Dataset):
    """(x, y) pairs of a 1-D token corpus: x = corpus[s : s + T], y = corpus[s + 1 : s + T + 1].

    Block ``i`` starts at ``s = i * stride``: stride 1 gives every start offset (training), stride T fixed,
    non-overlapping blocks (validation). ``scatter_seed`` serves the blocks in a fixed pseudo-random order, so
    the first few batches (Lightning's ``limit_val_batches``) sample the whole split, not only its beginning.
    A whole batch is gathered with one indexing op (``__getitems__``).
    """

    def __init__(self, corpus: Tensor, block_size: int, stride: int = 1, scatter_seed: int | None = None) -> None:
        self.corpus, self.block_size, self.stride = corpus, block_size, stride
        self._offsets = torch.arange(block_size + 1)  # (T + 1,)
        self._order = None
        if scatter_seed is not None:
            self._order = torch.randperm(len(self), generator=torch.Generator().manual_seed(scatter_seed))  # (N,)

    def __len__(self) -> int:
        return max(0, (len(self.corpus) - self.block_size - 1) // self.stride + 1)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]  # (T,), (T,)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        blocks = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        if self._order is not None:
            blocks = self._order[blocks]
        index = (blocks * self.stride)[:, None] + self._offsets  # (B, T + 1)
        return self.corpus[index[:, :-1]], self.corpus[index[:, 1:]]  # (B, T), (B, T)


def _resolve_source(source: str, file_only: bool) -> str:
    """Expand ``~`` and ``$VARS`` in ``source``; return the local path or Hub id; a missing file is an error."""
    try:
        path = resolve_dataset(source, option=SOURCE_OPTION)
    except FileNotFoundError:
        path = None  # a path that can only be local, and is missing
    if path is not None and (os.path.exists(path) or not (file_only or Path(path).suffix in _TEXT_SUFFIXES)):
        return path
    expanded = os.path.expandvars(os.path.expanduser(source))
    origin = f" (from {source!r})" if expanded != source else ""
    raise FileNotFoundError(
        f"text file {expanded!r}{origin} does not exist; point --data.source at a text file, a list of text "
        "files, or a Hugging Face dataset with a text column (Hub id such as 'karpathy/tiny_shakespeare')"
    )


def _read_text_file(path: str) -> str:
    """The file's UTF-8 text, exactly (no newline translation)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is not a file; every entry of a --data.source list must be a text file")
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path!r} is not UTF-8 text (bad byte at offset {err.start}); convert it, e.g. iconv -t UTF-8"
        ) from None


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
        cache_dir: where tokenizers and encoded splits are cached (default ``~/.cache/genlit/text``).

    ``tokenizer``, ``vocab_size`` and ``block_size`` are available right after construction (the CLI links
    them into the model): the first access reads the source and builds (or loads) the tokenizer.
    ``prepare_data`` also encodes the splits into the cache; ``setup`` loads them into memory.
    Batches are tuples ``(x, y)`` of int64 (B, block_size) with ``y`` = ``x`` shifted by one token. The
    training loader draws blocks at random start offsets (every offset is one item); validation and test
    use the fixed, non-overlapping blocks at offsets 0, T, 2T, ..., served in a fixed scattered order so that
    ``limit_val_batches`` samples the whole split.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_args()
        self._texts: dict[str, str] | None = None  # split -> text, read on demand, dropped once encoded
        self._key: str | None = None
        self._tokenizer: Tokenizer | None = None
        self._corpora: dict[str, Tensor] = {}  # split -> (N,) int64 token ids

    def _check_args(self) -> None:
        hp = self.hparams
        if hp.tokenizer not in get_args(TokenizerName):
            raise ValueError(
                f"tokenizer {hp.tokenizer!r} is not known; use one of {', '.join(get_args(TokenizerName))}"
            )
        if hp.tokenizer == "bpe":
            BPETokenizer.check_vocab_size(hp.bpe_vocab_size)
        if hp.block_size < 1 or hp.batch_size < 1 or hp.num_workers < 0:
            raise ValueError(
                f"block_size ({hp.block_size}) and batch_size ({hp.batch_size}) must be >= 1 and "
                f"num_workers ({hp.num_workers}) >= 0"
            )
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
                texts = self._split_texts()
                held_out = [texts["val"]] if texts["test"] is texts["val"] else [texts["val"], texts["test"]]
                built = build_tokenizer(self.hparams.tokenizer, texts["train"], self.hparams.bpe_vocab_size, held_out)
                with atomic_write(path, "w", encoding="utf-8", replace=False) as handle:
                    handle.write(built.to_json())
            self._tokenizer = tokenizer_from_json(path.read_text(encoding="utf-8"))  # the published one
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of token ids of :attr:`tokenizer` (the model's embedding and output size)."""
        return self.tokenizer.vocab_size

    def prepare_data(self) -> None:
        """Read the source, build the tokenizer and encode every split into the cache (once per node)."""
        if not self._cache_path("corpus.pt").exists():
            self._write_corpora()

    def setup(self, stage: str | None = None) -> None:
        """Load the encoded splits into memory (encoding them if ``prepare_data`` did not) and check that
        the splits ``stage`` uses hold at least one block."""
        if not self._corpora:
            path = self._cache_path("corpus.pt")
            if not path.exists():
                self._write_corpora()
            self._corpora = torch.load(path, weights_only=True)  # split -> (N,) int64
            self._texts = None  # the tokens are all that is needed from now on
        for split in _STAGE_SPLITS.get(stage, ("train", "val", "test")):
            self._check_length(split)

    def split_tokens(self, split: str) -> Tensor:
        """The encoded corpus (N,) int64 of ``train``, ``val`` or ``test`` (after ``setup``)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if not self._corpora:
            raise RuntimeError("call setup() before asking for the encoded splits")
        return self._corpora[split]

    def train_dataloader(self) -> DataLoader:
        """Batches of blocks at random start offsets (shuffled); the last incomplete batch is dropped."""
        return self._loader("train", stride=1, train=True)

    def val_dataloader(self) -> DataLoader:
        """Fixed, non-overlapping validation blocks, served in a fixed scattered order (see :class:`TokenBlocks`)."""
        return self._loader("val", stride=self.hparams.block_size)

    def test_dataloader(self) -> DataLoader:
        """Fixed, non-overlapping test blocks, served in a fixed scattered order."""
        return self._loader("test", stride=self.hparams.block_size)

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

    def _check_length(self, split: str) -> None:
        """One clear error when ``split`` is too short for one block (block_size + 1 tokens)."""
        tokens, need = len(self.split_tokens(split)), self.hparams.block_size + 1
        if tokens < need:
            raise ValueError(
                f"the {split} split has {tokens} tokens, too few for block_size {need - 1} (a block needs "
                f"{need}); lower --data.block_size or give more text"
            )

    def split_text(self, split: str) -> str:
        """The raw text of ``train``, ``val`` or ``test`` (read from the source; no tokenizer involved)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        return self._split_texts()[split]

    # ------------------------------------------------------------------------------------------ source
    def _split_texts(self) -> dict[str, str]:
        """The text of each split (``test`` may be the ``val`` object itself), read once."""
        if self._texts is None:
            source = self.hparams.source
            if isinstance(source, str):
                path = _resolve_source(source, file_only=False)
                is_text = os.path.isfile(path) and Path(path).suffix not in _DATASET_SUFFIXES
                self._texts = self._carve(_read_text_file(path)) if is_text else self._dataset_texts(path)
            else:
                self._texts = self._carve("".join(_read_text_file(_resolve_source(s, True)) for s in source))
        return self._texts

    def _carve(self, text: str) -> dict[str, str]:
        """Contiguous split: the first ``1 - val_fraction`` of the characters train, the rest validates/tests."""
        if not text:
            raise ValueError(f"--data.source {self.hparams.source!r} holds no text; give a non-empty text file")
        n = int(len(text) * (1 - self.hparams.val_fraction))
        val = text[n:]
        return {"train": text[:n], "val": val, "test": val}

    def _dataset_texts(self, path: str) -> dict[str, str]:
        """Split texts of a Hugging Face dataset: its own validation/test splits if any, else carved from train."""
        raw = load_raw_dataset(path, option=SOURCE_OPTION)
        if "train" not in raw:
            raise ValueError(f"{self.hparams.source!r} has no train split (splits: {', '.join(raw)})")
        val = next((name for name in _VALIDATION_NAMES if name in raw), None)
        if val is None:
            return self._carve(self._column_text(raw["train"], "train"))
        test = "test" if "test" in raw else val
        texts = {name: self._column_text(raw[name], name) for name in dict.fromkeys(("train", val, test))}
        return {"train": texts["train"], "val": texts[val], "test": texts[test]}

    def _column_text(self, ds: datasets.Dataset, split: str) -> str:
        """The rows of the text column of ``ds`` joined with a blank line (missing rows skipped)."""
        import datasets

        column = self.hparams.text_column
        feature = ds.features.get(column)
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            what = (
                f"holds {feature}, not text"
                if feature is not None
                else f"is missing (columns: {', '.join(ds.column_names)})"
            )
            raise ValueError(
                f"column {column!r} of split {split!r} in {self.hparams.source!r} {what}; "
                "set --data.text_column to a string column"
            )
        rows = ds.select_columns([column]).with_format("arrow")[:].column(column).to_pylist()
        return _ROW_SEPARATOR.join(row for row in rows if row is not None)

    # ------------------------------------------------------------------------------------------- cache
    def _cache_path(self, name: str) -> Path:
        """``<cache_dir>/<key>/<name>``: the key hashes the split texts and the tokenizer settings."""
        raw = self.hparams.cache_dir or _DEFAULT_CACHE
        root = os.path.expandvars(os.path.expanduser(raw))
        if "$" in root:
            raise ValueError(f"--data.cache_dir {raw!r} names an unset environment variable; export it or give a path")
        return Path(root) / self._cache_key() / name

    def _cache_key(self) -> str:
        if self._key is None:
            hp = self.hparams
            settings = {"version": _CACHE_VERSION, "tokenizer": hp.tokenizer, "val_fraction": hp.val_fraction}
            if hp.tokenizer == "bpe":
                settings["bpe_vocab_size"] = hp.bpe_vocab_size
            digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
            for split, text in self._split_texts().items():
                digest.update(f"\0{split}:{len(text)}\0".encode())
                digest.update(text.encode())
            self._key = digest.hexdigest()[:24]
        return self._key

    def _write_corpora(self) -> None:
        """Encode every split with :attr:`tokenizer` and publish ``{split: (N,) int64}`` to the cache."""
        tokenizer, texts, encoded = self.tokenizer, self._split_texts(), {}
        for split, text in texts.items():
            if split == "test" and text is texts["val"]:
                encoded[split] = encoded["val"]  # one tensor, saved once
            else:
                encoded[split] = torch.tensor(tokenizer.encode(text), dtype=torch.int64)  # (N,)
        with atomic_write(self._cache_path("corpus.pt"), replace=False) as handle:
            torch.save(encoded, handle)
