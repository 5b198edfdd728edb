"""Token corpora served as (x, y) blocks (:class:`TokenBlocks`), in memory or on disk.

On disk (storage: disk) each split is encoded piece by piece into a flat file of token ids, read back memory-mapped.

A split's text is never held whole: its pieces are re-cut into chunks of about ``_ENCODE_CHARS`` characters where
tokenization is unaffected (:func:`safe_chunks`), and each chunk's ids are appended to the split's file (uint16
when the vocabulary fits, else uint32). A manifest (``tokens.json``: the dtype, each split's file and length),
published last, says the files are complete. Everything is published atomically, the first writer winning, so
DDP ranks and later runs share one copy.

:class:`TokenFile` reads a file through ``numpy.memmap``: a batch gathers its blocks from the page cache, which
every DataLoader worker of a node shares; a pickled TokenFile carries its path, not its data, and each worker
maps the file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from genlit.files import atomic_write

MANIFEST = "tokens.json"
_ENCODE_CHARS = 1 << 22  # characters per encoded chunk (about 4 M: tens of MB of ids in flight)
# Before a space, tab or line break that follows a non-space character. Every GPT-2 pre-token (a letter run, a
# digit run or a symbol run, each with at most one leading space; a contraction; a whitespace run) that holds
# the non-space character stops there, and the pre-tokenizer's pattern only looks ahead, so the two sides of the
# cut split into the pre-tokens of the whole: encoding the chunks gives the ids of the whole text. (It also cuts
# where tokenizers.text_chunks does not: a dataset of one-line rows joined by blank lines has no other place.)
_CUT = re.compile(r"(?<=\S)(?=[ \t\r\n])")


def safe_chunks(pieces: Iterable[str], size: int = _ENCODE_CHARS) -> Iterator[str]:
    """Re-cut a text given in ``pieces`` into chunks of a little over ``size`` characters, only where the
    tokenization is unaffected (see ``_CUT``); a stretch of text with no such place stays in one chunk."""
    buffer, start = "", size
    for piece in pieces:
        buffer += piece
        while len(buffer) > start:
            cut = _CUT.search(buffer, start)
            if cut is None:
                start = len(buffer)  # searched up to here (a cut needs the character after it)
                break
            yield buffer[: cut.start()]
            buffer, start = buffer[cut.start() :], size
    if buffer:
        yield buffer


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id of a ``vocab_size`` vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def write_tokens(path: Path, chunks: Iterable[str], encode: Callable[[str], list[int]], dtype: np.dtype) -> int:
    """Encode ``chunks`` one at a time and publish their ids as one flat ``dtype`` file at ``path``
    (atomically, the first writer winning); returns the number of tokens."""
    count = 0
    with atomic_write(path, replace=False) as handle:
        for chunk in chunks:
            ids = np.asarray(encode(chunk), dtype=dtype)  # (n,)
            handle.write(ids.tobytes())
            count += len(ids)
    return count


def write_token_files(
    folder: Path, splits: dict[str, Callable[[], Iterable[str]]], encode: Callable[[str], list[int]], vocab_size: int
) -> None:
    """Encode every split (``split -> a function giving its text chunks``; splits given the same function share
    one file) into ``folder``, then publish the manifest."""
    dtype, files, written = token_dtype(vocab_size), {}, {}
    for split, chunks in splits.items():
        if id(chunks) not in written:
            name = f"{split}.{dtype.name}"
            written[id(chunks)] = {"file": name, "tokens": write_tokens(folder / name, chunks(), encode, dtype)}
        files[split] = written[id(chunks)]
    with atomic_write(folder / MANIFEST, "w", encoding="utf-8", replace=False) as handle:
        json.dump({"dtype": dtype.name, "splits": files}, handle)


def open_token_files(folder: Path) -> dict[str, TokenFile]:
    """Every split of a published ``folder`` as a :class:`TokenFile`."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {
        split: TokenFile(folder / entry["file"], manifest["dtype"], entry["tokens"])
        for split, entry in manifest["splits"].items()
    }


class TokenFile:
    """A flat file of token ids used as a 1-D int64 corpus: ``len`` and indexing by an int64 tensor of any
    shape, which gathers those ids from the memory map (the page cache) as int64."""

    def __init__(self, path: str | Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = str(path), np.dtype(dtype), length
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Tensor) -> Tensor:
        return torch.from_numpy(self.array()[index.numpy()].astype(np.int64))  # index's shape

    def array(self) -> np.ndarray:
        """The ids as a read-only ``numpy.memmap`` (N,), mapped on first use in this process."""
        if self._map is None:
            empty = self.length == 0  # an empty file cannot be mapped
            self._map = (
                np.empty(0, self.dtype) if empty else np.memmap(self.path, self.dtype, "r", shape=(self.length,))
            )
        return self._map

    def tensor(self) -> Tensor:
        """All ids as an int64 tensor (N,) in memory."""
        return torch.from_numpy(self.array().astype(np.int64))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}  # a worker maps the file itself, sharing the page cache


class TokenBlocks(Dataset):
    """(x, y) pairs of a 1-D token corpus: x = corpus[s : s + T], y = corpus[s + 1 : s + T + 1].

    Block ``i`` starts at ``s = i * stride``: stride 1 gives every start offset (training), stride T fixed,
    non-overlapping blocks (validation). ``scatter_seed`` serves the blocks in a fixed pseudo-random order, so
    the first few batches (Lightning's ``limit_val_batches``) sample the whole split, not only its beginning.
    A whole batch is gathered with one indexing op (``__getitems__``). The corpus is an int64 tensor (N,) or
    a :class:`~genlit.data.token_files.TokenFile` (a memory-mapped token file indexed the same way).
    """

    def __init__(
        self, corpus: Tensor | TokenFile, block_size: int, stride: int = 1, scatter_seed: int | None = None
    ) -> None:
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
