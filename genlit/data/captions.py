"""Captions of handwritten digits made in code from their labels, for an offline text-to-image experiment on MNIST.

A caption names its digit in one of several forms (a number word, a numeral, or a sum, difference or product
of two digits: "four minus one") inside a phrasing, with distractor words about the pen and the writing style
that say nothing about the digit ("the digit 7 written with a thick pen"). The phrasings come in two disjoint
sets: :data:`TRAIN_TEMPLATES`, which training captions are drawn from, and :data:`HELD_OUT_TEMPLATES`, which
training never sees (other sentence shapes, other distractor words, multiplication): a model that follows
held-out captions as well as training ones has learnt what the words mean rather than the captions by heart
(:func:`held_out_captions`; the captioned DataModule captions its test split with them by default).

A caption depends only on (digit, image index, seed, template set): :func:`caption_for` draws the template and
its words from a generator seeded by those, so every run and every rank agree and nothing is written to disk.
:func:`caption_digit` reads the digit back from a caption (the tests check that every caption names its digit).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from genlit.data.tokenizers import CharTokenizer, tokenizer_from_json

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PENS = ("thick", "thin", "fine", "ballpoint", "felt-tip", "blue", "black")
STYLES = ("neat", "messy", "slanted", "bold", "careful", "quick")
HELD_OUT_PENS = ("red", "pencil", "marker")  # distractor words only the held-out templates use
HELD_OUT_STYLES = ("shaky", "tidy", "wobbly")

# {word} number word, {num} numeral, {plus} / {minus} / {times} an arithmetic phrase equal to the digit,
# {pen} / {style} distractor words
TRAIN_TEMPLATES = (
    "a handwritten {word}",
    "the digit {num}",
    "the number {word}",
    "a {word} written by hand",
    "the digit {num} written with a {pen} pen",
    "a {style} {word}",
    "{word}",
    "{num}",
    "{plus}",
    "{minus}",
    "a {style} handwritten {num} in {pen} ink",
    "the result of {plus}",
)
HELD_OUT_TEMPLATES = (
    "someone wrote the number {num} with a {pen} pen",
    "a {style} drawing of the digit {word}",
    "{times}",
    "{word}, scribbled in {pen}",
    "what you get from {minus}",
)

_NUMBER = re.compile(r"\b(?:(\w+) (plus|minus|times) (\w+)|(\w+))\b")


def _value(token: str) -> int | None:
    """The digit a number word or numeral stands for, else None."""
    if token.isdigit() and len(token) == 1:
        return int(token)
    return WORDS.index(token) if token in WORDS else None


def _arithmetic(digit: int, op: str, rng: random.Random) -> str:
    """``"a op b"`` in number words, equal to ``digit`` (0..9), with operands drawn by ``rng``."""
    if op == "plus":
        a = rng.randint(0, digit)
        return f"{WORDS[a]} plus {WORDS[digit - a]}"
    if op == "minus":
        b = rng.randint(0, 9 - digit)
        return f"{WORDS[digit + b]} minus {WORDS[b]}"
    pairs = [(a, b) for a in range(10) for b in range(10) if a * b == digit]
    a, b = rng.choice(pairs)
    return f"{WORDS[a]} times {WORDS[b]}"


def fill_template(template: str, digit: int, rng: random.Random, held_out: bool = False) -> str:
    """``template`` filled for ``digit`` (0..9), its operands and distractor words drawn by ``rng``."""
    if not 0 <= digit <= 9:
        raise ValueError(f"captions name digits 0..9, got {digit}")
    pens, styles = (HELD_OUT_PENS, HELD_OUT_STYLES) if held_out else (PENS, STYLES)
    fields = {"word": WORDS[digit], "num": str(digit), "pen": rng.choice(pens), "style": rng.choice(styles)}
    for op in ("plus", "minus", "times"):
        if "{" + op + "}" in template:
            fields[op] = _arithmetic(digit, op, rng)
    return template.format(**fields)


def caption_for(digit: int, index: int, seed: int = 0, held_out: bool = False) -> str:
    """The caption of image ``index`` showing ``digit`` under ``seed``: a template of the training set (or of the
    held-out set) and its words, drawn from a generator seeded by (seed, index, set) alone."""
    rng = random.Random(f"{seed}:{index}:{'held_out' if held_out else 'train'}")
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    return fill_template(rng.choice(templates), digit, rng, held_out)


def captions_for(digits: Sequence[int], seed: int = 0, held_out: bool = False, start: int = 0) -> list[str]:
    """The captions of images ``start, start + 1, ...`` showing ``digits``: :func:`caption_for` of each."""
    return [caption_for(int(d), start + i, seed, held_out) for i, d in enumerate(digits)]


def held_out_captions(digit: int, num: int | None = None, seed: int = 0) -> list[str]:
    """Captions of ``digit`` in the held-out phrasings, for evaluation: every held-out template once (``num``
    None), or ``num`` drawn ones."""
    if num is None:
        rng = random.Random(f"{seed}:{digit}:held_out_set")
        return [fill_template(t, digit, rng, held_out=True) for t in HELD_OUT_TEMPLATES]
    return [caption_for(digit, i, seed, held_out=True) for i in range(num)]


def caption_digit(caption: str) -> int | None:
    """The digit a caption names (a number word, a numeral or ``a plus|minus|times b``), or None when it names
    none; the first one named wins."""
    for match in _NUMBER.finditer(caption.lower()):
        left, op, right, single = match.groups()
        if op is not None:
            a, b = _value(left), _value(right)
            if a is not None and b is not None:
                return a + b if op == "plus" else a - b if op == "minus" else a * b
        value = _value(single or left)
        if value is not None:
            return value
    return None


def caption_alphabet() -> str:
    """Every character a template caption (training or held-out) can hold, sorted: a character vocabulary that
    encodes held-out captions and prompts written in the same alphabet."""
    words = WORDS + PENS + STYLES + HELD_OUT_PENS + HELD_OUT_STYLES
    text = "".join(TRAIN_TEMPLATES + HELD_OUT_TEMPLATES + words) + "0123456789abcdefghijklmnopqrstuvwxyz -,.'"
    return "".join(sorted(set(re.sub(r"\{\w+\}", "", text))))


def caption_vocabulary() -> list[str]:
    """The text a word vocabulary of generated captions is learnt from: every training template and every word the
    training captions fill in (number words, numerals, plus / minus, training pens and styles). Words only held-out
    captions use (held-out pens and styles, their phrasings' words, ``times``) stay out: they are unknown words."""
    fillers = [*WORDS, *"0123456789", *PENS, *STYLES, "plus", "minus"]
    return [re.sub(r"\{\w+\}", " ", t) for t in TRAIN_TEMPLATES] + fillers


class WordTokenizer:
    """A word-level caption vocabulary (Hugging Face ``tokenizers``' ``WordLevel`` model): lower-cased text split
    into words and punctuation, one id per word seen in training, ``[UNK]`` (id 0) for any other word.

    Unlike characters, an unknown word cannot change how known words are read: ``someone wrote the number 7 with a
    red pen`` reaches the text encoder as ``[UNK] [UNK] the number 7 with a [UNK] pen``. With the family's
    ``token_dropout`` the encoder learns in training that ``[UNK]`` says nothing."""

    UNK = "[UNK]"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Sequence[str]) -> WordTokenizer:
        """The vocabulary of the words in ``texts`` (training captions only)."""
        tokenizer = HFTokenizer(models.WordLevel(unk_token=cls.UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[cls.UNK], show_progress=False))
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        """Known words and ``[UNK]``."""
        return self._tokenizer.get_vocab_size()

    @property
    def unk_id(self) -> int:
        """The id of ``[UNK]`` (0)."""
        return self._tokenizer.token_to_id(self.UNK)

    def encode(self, text: str) -> list[int]:
        """Ids of the words of ``text`` (unknown words: ``unk_id``)."""
        return self._tokenizer.encode(text).ids

    def decode(self, ids: list[int] | Tensor) -> str:
        """The words of ``ids`` joined by spaces."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        """``{"kind": "word", "tokenizer": <the Hugging Face tokenizer JSON>}``."""
        return json.dumps({"kind": "word", "tokenizer": json.loads(self._tokenizer.to_str())})


PAD = -1
"""The id of a padded position in packed token ids (:func:`pack_texts`); the text encoders read any negative id as
padding, so the padding mask is ``ids >= 0``."""


def pack_texts(tokenizer, texts: Sequence[str], max_tokens: int, truncate: bool = True) -> Tensor:
    """Token ids (N, max_tokens) int64 of ``texts`` (lower-cased) by ``tokenizer``, padded with :data:`PAD` (the
    padding mask is ``ids >= 0``; the empty text is all padding). Characters are lower-cased for a character
    tokenizer (the template captions are lower-case). Longer texts are cut to ``max_tokens`` when
    ``truncate``, else one clear error (a prompt is never cut silently)."""
    ids = torch.full((len(texts), max_tokens), PAD, dtype=torch.long)  # (N, L)
    for row, text in enumerate(texts):
        tokens = tokenizer.encode(text.lower() if isinstance(tokenizer, CharTokenizer) else text)
        if len(tokens) > max_tokens and not truncate:
            raise ValueError(
                f"the prompt {text!r} has {len(tokens)} tokens, more than the {max_tokens} this model reads; shorten it"
            )
        tokens = tokens[:max_tokens]
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
    return ids


class PretrainedTokenizer:
    """The tokenizer of a Hugging Face model (``transformers.AutoTokenizer``, from the local cache or a folder),
    for a frozen :class:`~genlit.nets.text_encoder.HFTextEncoder`: ``encode``, ``vocab_size`` and a JSON record
    of the model id (the checkpoint stores it; loading needs the same files)."""

    def __init__(self, model_id: str) -> None:
        try:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(model_id)
        except (ImportError, OSError) as err:
            raise ValueError(f"cannot load the tokenizer of {model_id!r} ({str(err).splitlines()[0]})") from None
        self.model_id = model_id

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary (its embedding table's size)."""
        return len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with the model's special tokens (CLIP's start and end, T5's end)."""
        return self._tokenizer(text)["input_ids"]

    def to_json(self) -> str:
        """``{"kind": "pretrained", "model_id": ...}``."""
        return json.dumps({"kind": "pretrained", "model_id": self.model_id})


def caption_tokenizer_from_json(s: str):
    """The caption tokenizer a checkpoint stores: a genlit tokenizer, a :class:`WordTokenizer` or a
    :class:`PretrainedTokenizer`."""
    record = json.loads(s)
    if record.get("kind") == "pretrained":
        return PretrainedTokenizer(record["model_id"])
    if record.get("kind") == "word":
        return WordTokenizer(HFTokenizer.from_str(json.dumps(record["tokenizer"])))
    return tokenizer_from_json(s)
