"""The text of a corpus source, whole or a piece at a time: local text files, or a Hugging Face dataset's text column.

A source is a local text file, a list of them (concatenated in order, nothing added between), or a Hugging Face
dataset (Hub id, local dataset directory or parquet/arrow file) whose text column's rows are joined with a blank
line. :func:`source_texts` opens it as one :class:`RawText` per text it holds: ``train`` alone (one text, to be cut
into train and validation), or ``train``, ``val`` and ``test`` (a dataset's own splits; ``test`` may be the ``val``
object itself). A :class:`RawText` is read whole (:meth:`~RawText.read`), a piece at a time
(:meth:`~RawText.pieces`: some MB of a file, or a batch of rows of the memory-mapped Arrow table), or scanned
(:meth:`~RawText.scan`: its UTF-8 bytes fed to a hash and its characters counted, without holding the text).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genlit.data.hub import load_raw_dataset, resolve_dataset
from genlit.data.token_files import safe_chunks

if TYPE_CHECKING:  # imported where used (dataset sources): `datasets` takes about 2 s to import
    import datasets

SOURCE_OPTION = "--data.source"
DATASET_SUFFIXES = (".parquet", ".arrow")  # single files read as datasets (with a text column)
# a missing source with one of these suffixes is a missing file, not a Hub id
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".tex", ".csv", ".tsv", ".json", ".jsonl", ".html", ".xml")
_VALIDATION_NAMES = ("validation", "valid", "val", "test")  # a dataset's split used for validation, first found
ROW_SEPARATOR = "\n\n"  # between the rows of a dataset's text column
_READ_BYTES = 1 << 24  # a text file is read 16 MiB at a time
_READ_ROWS = 256  # a dataset's rows are read this many at a time


def resolve_source(source: str, file_only: bool) -> str:
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


def is_text_file(path: str) -> bool:
    """Whether a resolved source is a plain text file (not a parquet/arrow dataset file, directory or Hub id)."""
    return os.path.isfile(path) and Path(path).suffix not in DATASET_SUFFIXES


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is not a file; every entry of a --data.source list must be a text file")


def _not_utf8(path: str, offset: int) -> ValueError:
    return ValueError(f"{path!r} is not UTF-8 text (bad byte at offset {offset}); convert it, e.g. iconv -t UTF-8")


def read_text_file(path: str) -> str:
    """The file's UTF-8 text, exactly (no newline translation)."""
    _check_file(path)
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err.start) from None


def _file_pieces(path: str) -> Iterator[str]:
    """The UTF-8 text of one file, ``_READ_BYTES`` at a time (a character cut between two reads is kept whole)."""
    _check_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before the current block
    with open(path, "rb") as handle:
        for block in chain(iter(lambda: handle.read(_READ_BYTES), b""), [b""]):  # b"": the end, flush
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the previous block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise _not_utf8(path, offset - pending + err.start) from None
            offset += len(block)
            if text:
                yield text


class RawText(ABC):
    """One text of a source, read whole, a piece at a time, or scanned (see the module docstring)."""

    @abstractmethod
    def pieces(self) -> Iterator[str]:
        """The text in order, a bounded piece at a time."""

    @abstractmethod
    def scan(self, digest) -> int:
        """Feed the text's UTF-8 bytes to ``digest`` (a ``hashlib`` hash) and return its length in characters."""

    def read(self) -> str:
        """The whole text."""
        return "".join(self.pieces())

    def pieces_between(self, start: int, stop: int | None = None) -> Iterator[str]:
        """The pieces of characters ``start`` to ``stop`` (to the end when ``stop`` is None)."""
        position = 0
        for piece in self.pieces():
            end = position + len(piece)
            if end > start:
                yield piece[max(0, start - position) : None if stop is None else stop - position]
            position = end
            if stop is not None and position >= stop:
                return


class TextFiles(RawText):
    """Text files concatenated in order (nothing added between); each must be UTF-8 on its own."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def pieces(self) -> Iterator[str]:
        """The files' text, some MB at a time."""
        for path in self.paths:
            yield from _file_pieces(path)

    def read(self) -> str:
        """The files' whole text."""
        return "".join(read_text_file(path) for path in self.paths)

    def scan(self, digest) -> int:
        """Hash the files' bytes and count their characters (UTF-8 bytes that do not continue a character)."""
        chars = 0
        for path in self.paths:
            _check_file(path)
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(_READ_BYTES), b""):  # noqa: B023 - used at once
                    digest.update(block)
                    chars += int(np.count_nonzero((np.frombuffer(block, np.uint8) & 0xC0) != 0x80))
        return chars


class ColumnText(RawText):
    """The rows of a dataset split's text column joined with a blank line (missing rows skipped), read
    ``_READ_ROWS`` rows at a time from the memory-mapped Arrow table."""

    def __init__(self, ds: datasets.Dataset, column: str) -> None:
        self.ds, self.column = ds.select_columns([column]).with_format("arrow"), column

    def pieces(self) -> Iterator[str]:
        """The joined rows, a batch of rows at a time."""
        first = True
        for table in self.ds.iter(batch_size=_READ_ROWS):
            rows = [row for row in table.column(self.column).to_pylist() if row is not None]
            if rows:
                text = ROW_SEPARATOR.join(rows)
                yield text if first else ROW_SEPARATOR + text
                first = False

    def scan(self, digest) -> int:
        """Hash the joined rows' UTF-8 bytes and count their characters."""
        chars = 0
        for piece in self.pieces():
            digest.update(piece.encode())
            chars += len(piece)
        return chars


def check_text_column(features: datasets.Features | None, column: str, split: str, source: object) -> None:
    """One clear error when ``column`` is missing from a split or holds no strings (unknown features pass)."""
    import datasets

    if features is None:
        return
    feature = features.get(column)
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return
    what = f"holds {feature}, not text" if feature is not None else f"is missing (columns: {', '.join(features)})"
    raise ValueError(
        f"column {column!r} of split {split!r} in {source!r} {what}; set --data.text_column to a string column"
    )


def split_names(names: list[str], source: object) -> tuple[str | None, str | None]:
    """A dataset's validation and test split names (None, None without a held-out split; test falls back
    to validation); an error when it has no train split."""
    if "train" not in names:
        raise ValueError(f"{source!r} has no train split (splits: {', '.join(names)})")
    val = next((name for name in _VALIDATION_NAMES if name in names), None)
    if val is None:
        return None, None
    return val, "test" if "test" in names else val


def source_texts(source: str | list[str], column: str) -> dict[str, RawText]:
    """The texts of ``source``: ``{"train"}`` alone (to be carved), or a dataset's ``train``, ``val`` and
    ``test`` (``test`` is the ``val`` object when the dataset has no test split)."""
    if not isinstance(source, str):
        return {"train": TextFiles([resolve_source(s, file_only=True) for s in source])}
    path = resolve_source(source, file_only=False)
    if is_text_file(path):
        return {"train": TextFiles([path])}
    raw = load_raw_dataset(path, option=SOURCE_OPTION)
    val, test = split_names(list(raw), source)
    names = {"train": "train", "val": val, "test": test}
    opened = {}
    for name in dict.fromkeys(name for name in names.values() if name):
        check_text_column(raw[name].features, column, name, source)
        opened[name] = ColumnText(raw[name], column)
    return {split: opened[name] for split, name in names.items() if name}


def carve_point(num_chars: int, val_fraction: float, source: object) -> int:
    """Characters of a carved text that train (the first ``1 - val_fraction``); an error for an empty text."""
    if num_chars == 0:
        raise ValueError(f"--data.source {source!r} holds no text; give a non-empty text file")
    return int(num_chars * (1 - val_fraction))


class SourceScan:
    """A source's texts, scanned once (storage: disk): the cache key, a hash of ``settings`` and of the texts'
    bytes computed while reading them, and their lengths, which place the cut of a carved text."""

    def __init__(self, source: str | list[str], column: str, val_fraction: float, settings: dict) -> None:
        self.source, self.val_fraction = source, val_fraction
        self.texts = source_texts(source, column)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        self.lengths: dict[int, int] = {}  # id of a text -> its characters (test and val may be one text)
        for split, text in self.texts.items():
            if id(text) not in self.lengths:
                digest.update(f"\0{split}\0".encode())
                self.lengths[id(text)] = text.scan(digest)
                digest.update(f"\0{self.lengths[id(text)]}\0".encode())
        self.key = digest.hexdigest()[:24]

    def distinct_texts(self) -> list[RawText]:
        """Each text of the source once."""
        return list({id(text): text for text in self.texts.values()}.values())

    def characters(self) -> str:
        """The distinct characters of every text (one pass over each)."""
        chars = set()
        for text in self.distinct_texts():
            for piece in text.pieces():
                chars.update(piece)
        return "".join(chars)

    def split_chunks(self) -> dict[str, Callable[[], Iterator[str]]]:
        """``split -> a function giving the split's text as chunks cut where tokenization is unaffected``;
        splits that are one text share one function (a carved text's validation is its test)."""
        if "val" not in self.texts:
            text = self.texts["train"]
            cut = carve_point(self.lengths[id(text)], self.val_fraction, self.source)
            val = partial(_chunks, text, cut, None)
            return {"train": partial(_chunks, text, 0, cut), "val": val, "test": val}
        functions = {id(text): partial(_chunks, text, 0, None) for text in self.distinct_texts()}
        return {split: functions[id(text)] for split, text in self.texts.items()}


def _chunks(text: RawText, start: int, stop: int | None) -> Iterator[str]:
    """Characters ``start`` to ``stop`` of ``text`` as chunks cut where tokenization is unaffected."""
    return safe_chunks(text.pieces_between(start, stop))
