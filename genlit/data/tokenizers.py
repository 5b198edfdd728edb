"""Tokenizers for text models: characters, or a byte-level BPE trained locally with Hugging Face ``tokenizers``.

Every tokenizer says what unit of text its tokens stand for (``unit``: ``char`` or ``byte``) and how many
units each token id covers (:meth:`Tokenizer.unit_lengths`), so a model can report bits per character or
per byte exactly, per batch, whatever its tokenizer. Both serialise to JSON carrying a ``kind`` field;
:func:`tokenizer_from_json` rebuilds either (a checkpoint stores the JSON, so sampling needs no dataset).

Either can carry the ``[MASK]`` token of a masked language model (:func:`with_mask_token`): the last id, written
``[MASK]`` in text (so a prompt names the positions to fill), standing for no text at all (unit length 0), so
bits per character or byte of real text stay exact.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from torch import Tensor

TokenizerName = Literal["char", "bpe"]
Unit = Literal["char", "byte"]

_NUM_BYTES = 256  # a byte-level BPE starts from one token per byte value
_CHUNK_CHARS = 1 << 20  # encode / train on pieces of about this many characters (in parallel)
# A line break between two non-space characters: no GPT-2 pre-token crosses it, so cutting there changes nothing
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
_MAX_NAMED = 10  # unknown characters named in an error
MASK = "[MASK]"


def _id_list(ids: list[int] | Tensor) -> list[int]:
    """Token ids as a Python list (from a list, or a 1-D tensor)."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1:
            raise ValueError(f"decode takes one sequence of token ids, a 1-D tensor; got shape {tuple(ids.shape)}")
        return ids.tolist()
    return list(ids)


def _check_ids(ids: list[int], vocab_size: int) -> None:
    """One clear error for token ids outside ``[0, vocab_size)``."""
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"token ids {bad[:_MAX_NAMED]} lie outside the vocabulary [0, {vocab_size}); "
            "decode ids made by the same tokenizer (the one stored with the model)"
        )


def text_chunks(text: str, size: int | None = None) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``size`` characters (default ``_CHUNK_CHARS``), only at a line break
    between two non-space characters, where no byte-level (GPT-2) pre-token crosses: encoding the pieces
    gives the same ids as encoding the whole."""
    size = _CHUNK_CHARS if size is None else size
    start = 0
    while len(text) - start > size:
        cut = _SAFE_CUT.search(text, start + size)
        if cut is None:
            break
        yield text[start : cut.start()]
        start = cut.start()
    yield text[start:]


class Tokenizer(ABC):
    """What every genlit tokenizer offers: ``vocab_size``, ``unit``, encode/decode, unit lengths and JSON."""

    unit: Unit
    """What bits-per-unit is measured in: ``char`` (characters) or ``byte`` (UTF-8 bytes)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; they are ``0 .. vocab_size - 1``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: list[int] | Tensor) -> str:
        """Text of a sequence of token ids (a list or a 1-D tensor)."""

    @abstractmethod
    def unit_lengths(self) -> list[int]:
        """For every token id, how many units (chars or UTF-8 bytes) of text it stands for."""

    @abstractmethod
    def to_json(self) -> str:
        """A JSON string with a ``kind`` field, read back by :func:`tokenizer_from_json`."""

    @property
    @abstractmethod
    def mask_id(self) -> int | None:
        """The id of ``[MASK]`` (the last id) when the tokenizer has it, else None."""


class CharTokenizer(Tokenizer):
    """One token per character: the vocabulary is a sorted string of distinct characters (id = position), then
    ``[MASK]`` when ``mask=True`` (id ``len(chars)``; the text ``[MASK]`` encodes to it)."""

    unit: Unit = "char"

    def __init__(self, chars: str, mask: bool = False) -> None:
        if not chars or len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("a character vocabulary must be a non-empty string of sorted, distinct characters")
        self.chars, self.mask = chars, mask
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # (V,), sorted

    @classmethod
    def from_text(cls, text: str, *more: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the sorted distinct characters of ``text`` (and of ``more``)."""
        chars = set(text).union(*more)
        if not chars:
            raise ValueError("cannot build a character vocabulary from empty text; give some text")
        return cls("".join(sorted(chars)))

    @property
    def vocab_size(self) -> int:
        """Number of characters in the vocabulary (and the mask)."""
        return len(self.chars) + self.mask

    @property
    def mask_id(self) -> int | None:
        """``len(chars)`` when the tokenizer has ``[MASK]``."""
        return len(self.chars) if self.mask else None

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (``[MASK]`` is the mask's id when the tokenizer has one); characters
        outside the vocabulary are an error naming them."""
        if self.mask and MASK in text:
            pieces = text.split(MASK)
            ids = self._encode_chars(pieces[0])
            for piece in pieces[1:]:
                ids += [self.mask_id, *self._encode_chars(piece)]
            return ids
        return self._encode_chars(text)

    def _encode_chars(self, text: str) -> list[int]:
        if not text:
            return []
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (N,) code points
        ids = np.searchsorted(self._codepoints, codes)  # (N,) position each code point would take
        known = self._codepoints[np.minimum(ids, self.vocab_size - 1)] == codes  # (N,)
        if not known.all():
            unknown = sorted({chr(c) for c in codes[~known].tolist()})
            named = ", ".join(repr(c) for c in unknown[:_MAX_NAMED]) + (", ..." if len(unknown) > _MAX_NAMED else "")
            raise ValueError(
                f"the text has {len(unknown)} character(s) outside the model's vocabulary: {named}; the model "
                f"was trained on a character vocabulary of {self.vocab_size} characters, so remove or replace "
                "them (e.g. change the prompt)"
            )
        return ids.tolist()

    def decode(self, ids: list[int] | Tensor) -> str:
        """The characters of ``ids`` joined (the mask as ``[MASK]``)."""
        ids = _id_list(ids)
        _check_ids(ids, self.vocab_size)
        return "".join(self.chars[i] if i < len(self.chars) else MASK for i in ids)

    def unit_lengths(self) -> list[int]:
        """1 for every character: each stands for one character; 0 for the mask, which stands for none."""
        return [1] * len(self.chars) + [0] * self.mask

    def to_json(self) -> str:
        """``{"kind": "char", "chars": ..., "mask": ...}``."""
        return json.dumps({"kind": "char", "chars": self.chars, "mask": self.mask})


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style, Radford et al. 2019) from Hugging Face ``tokenizers``, trained locally.

    Text is split into GPT-2 pre-tokens, mapped to bytes, and merged by the learned rules; the base
    vocabulary holds all 256 bytes, so any text encodes, and decoding gives the text back exactly. There
    are no special tokens: the corpus is one stream of text. Bits are counted per UTF-8 byte.
    """

    unit: Unit = "byte"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges on ``text`` (a string or an iterator of strings; the training split only) until the
        vocabulary holds ``vocab_size`` tokens (fewer if the text runs out of pairs to merge). No network."""
        cls.check_vocab_size(vocab_size)
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        pieces = text_chunks(text) if isinstance(text, str) else text
        tokenizer.train_from_iterator(pieces, trainer)
        return cls(tokenizer)

    @staticmethod
    def check_vocab_size(vocab_size: int) -> None:
        """One clear error for a vocabulary size below the 256 byte tokens every byte-level BPE starts with."""
        if vocab_size < _NUM_BYTES:
            raise ValueError(
                f"a byte-level BPE vocabulary starts with {_NUM_BYTES} byte tokens, so vocab_size {vocab_size} "
                f"is too small; use --data.bpe_vocab_size {_NUM_BYTES} or more"
            )

    @property
    def vocab_size(self) -> int:
        """Number of tokens: 256 bytes plus the learned merges."""
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; long text is encoded in parallel pieces (cut where it changes nothing)."""
        pieces = list(text_chunks(text))
        if len(pieces) == 1:
            return self._tokenizer.encode(text).ids
        return [i for encoding in self._tokenizer.encode_batch(pieces) for i in encoding.ids]

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of ``ids``; a byte sequence cut inside a UTF-8 character decodes to U+FFFD there."""
        ids = _id_list(ids)
        _check_ids(ids, self.vocab_size)
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def unit_lengths(self) -> list[int]:
        """UTF-8 bytes per token: its length in the byte-to-character alphabet (0 for added/special tokens)."""
        added = set(self._tokenizer.get_added_tokens_decoder())
        tokens = [self._tokenizer.id_to_token(i) for i in range(self.vocab_size)]
        return [0 if i in added else len(token) for i, token in enumerate(tokens)]

    @property
    def mask_id(self) -> int | None:
        """The id of the added special token ``[MASK]``, if the tokenizer has it."""
        added = {token.content: i for i, token in self._tokenizer.get_added_tokens_decoder().items()}
        return added.get(MASK)

    def with_mask(self) -> BPETokenizer:
        """A copy with ``[MASK]`` added as a special token (the last id); itself if it has one."""
        if self.mask_id is not None:
            return self
        copy = HFTokenizer.from_str(self._tokenizer.to_str())
        copy.add_special_tokens([MASK])
        return BPETokenizer(copy)

    def to_json(self) -> str:
        """``{"kind": "bpe", "tokenizer": <the Hugging Face tokenizer JSON>}``."""
        return json.dumps({"kind": "bpe", "tokenizer": json.loads(self._tokenizer.to_str())})


def tokenizer_from_json(s: str) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_json` output, dispatching on its ``kind``."""
    data = json.loads(s)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["chars"], mask=data.get("mask", False))
    if kind == "bpe":
        return BPETokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])))
    raise ValueError(
        f"unknown tokenizer kind {kind!r} in the JSON; expected one of {', '.join(get_args(TokenizerName))}"
    )


CHECKPOINT_KEY = "genlit_tokenizer"  # where a language model's checkpoint stores its tokenizer's JSON
EXPORTED_FILE = "tokenizer.json"  # the tokenizer of a folder written by genlit export


def read_tokenizer(path: str | os.PathLike, option: str = "tokenizer_from") -> Tokenizer:
    """The tokenizer stored at ``path``: a tokenizer JSON file (:meth:`Tokenizer.to_json`, as ``genlit export`` and
    the text cache write it), a folder written by ``genlit export`` (its ``tokenizer.json``) or a genlit checkpoint
    of a language model (read with ``weights_only=True``). One clear error naming ``option`` otherwise."""
    path = Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))
    if path.is_dir():
        path = path / EXPORTED_FILE
        if not path.is_file():
            raise ValueError(f"{option} {path.parent} is a folder without {EXPORTED_FILE}; pass a language model's "
                             "checkpoint, a folder written by genlit export or a tokenizer JSON file")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such file; pass a language model's checkpoint (.ckpt), a "
                                "folder written by genlit export or a tokenizer JSON file")  # fmt: skip
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
    else:
        from genlit.checkpoints import read_checkpoint

        text = read_checkpoint(path, mmap=True).get(CHECKPOINT_KEY)
        if text is None:
            raise ValueError(f"{option} {path} stores no tokenizer; it is not a genlit language model's checkpoint")
    try:
        return tokenizer_from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{option} {path} does not hold a genlit tokenizer: {err}") from None


def with_mask_token(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` with ``[MASK]`` as its last id (itself if it has one already)."""
    if tokenizer.mask_id is not None:
        return tokenizer
    if isinstance(tokenizer, CharTokenizer):
        return CharTokenizer(tokenizer.chars, mask=True)
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.with_mask()
    raise TypeError(f"cannot add a mask token to a {type(tokenizer).__name__}")


def build_tokenizer(name: TokenizerName, train_text: str, vocab_size: int, held_out: Iterable[str] = ()) -> Tokenizer:
    """A ``char`` tokenizer over the characters of ``train_text`` and ``held_out``, or a ``bpe`` one with
    ``vocab_size`` tokens trained on ``train_text`` alone (``vocab_size`` and ``held_out`` unused for char).

    ``held_out`` (validation/test text) only widens the character vocabulary, so that held-out text always
    encodes (nanoGPT's choice: its vocabulary is the whole corpus's characters); byte-level BPE covers any text.
    """
    if name == "char":
        return CharTokenizer.from_text(train_text, *held_out)
    if name == "bpe":
        return BPETokenizer.train(train_text, vocab_size)
    raise ValueError(f"tokenizer {name!r} is not known; use one of {', '.join(get_args(TokenizerName))}")
