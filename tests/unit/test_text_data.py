"""Tokenizers (char, byte-level BPE) and the TextDataModule: round trips, unit lengths, splits, blocks, cache."""

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import genlit.data.tokenizers as tokenizers_module
from genlit.data.text import TextDataModule, TokenBlocks
from genlit.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    build_tokenizer,
    text_chunks,
    tokenizer_from_json,
)

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 20
UNICODE = "naïve café, 日本語のテキスト 🙂🙃\n\tTabs  and   spaces \r\n trailing  "


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TEXT, vocab_size=300)


def _write(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _module(tmp_path: Path, source, **kwargs) -> TextDataModule:
    kwargs.setdefault("block_size", 8)
    kwargs.setdefault("batch_size", 4)
    return TextDataModule(source, cache_dir=str(tmp_path / "cache"), **kwargs)


# ----------------------------------------------------------------------------------------- tokenizers
def test_char_round_trip_unit_lengths_and_json():
    tok = CharTokenizer.from_text(TEXT)
    assert tok.chars == "".join(sorted(set(TEXT))) and tok.vocab_size == len(set(TEXT)) and tok.unit == "char"
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT and tok.decode(torch.tensor(ids)) == TEXT
    assert ids[:2] == [tok.chars.index("F"), tok.chars.index("i")]
    lengths = tok.unit_lengths()
    assert len(lengths) == tok.vocab_size and sum(lengths[i] for i in ids) == len(TEXT)
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars and json.loads(tok.to_json())["kind"] == "char"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_char_unknown_characters_name_them():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"2 character\(s\).*'é', 'ø'.*vocabulary of 4 characters.*prompt"):
        tok.encode("a bé cø")
    many = "".join(chr(0x400 + i) for i in range(30))
    with pytest.raises(ValueError, match=r"30 character\(s\).*, \.\.\.;") as info:
        tok.encode(many)
    named = str(info.value).split("vocabulary: ")[1].split(", ...")[0]
    assert named.count("'") == 2 * 10  # at most ten named


def test_bpe_round_trips_any_text(bpe):
    assert bpe.unit == "byte" and 256 < bpe.vocab_size <= 300
    for text in (TEXT, UNICODE, "", " leading space", "x"):
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text and bpe.decode(torch.tensor(ids, dtype=torch.long)) == text
        lengths = bpe.unit_lengths()
        assert sum(lengths[i] for i in ids) == len(text.encode())
    assert len(bpe.encode(TEXT)) < len(TEXT) / 2  # merges learned on the text compress it
    assert sorted(bpe.unit_lengths())[:256] == [1] * 256  # every byte is a token


def test_bpe_json_round_trip(bpe):
    data = json.loads(bpe.to_json())
    assert data["kind"] == "bpe"
    again = tokenizer_from_json(bpe.to_json())
    assert isinstance(again, BPETokenizer) and again.vocab_size == bpe.vocab_size
    assert again.encode(UNICODE + TEXT) == bpe.encode(UNICODE + TEXT)
    assert again.unit_lengths() == bpe.unit_lengths()


def test_bpe_encodes_long_text_in_pieces_without_changing_ids(bpe, monkeypatch):
    text = (TEXT + UNICODE + "\n  \nend\n") * 3
    pieces = list(text_chunks(text, 50))
    assert len(pieces) > 10 and "".join(pieces) == text
    whole = bpe._tokenizer.encode(text).ids
    assert [i for piece in pieces for i in bpe._tokenizer.encode(piece).ids] == whole
    monkeypatch.setattr(tokenizers_module, "_CHUNK_CHARS", 50)
    assert bpe.encode(text) == whole


def test_bpe_vocab_size_too_small_and_unknown_names():
    with pytest.raises(ValueError, match="256 byte tokens.*--data.bpe_vocab_size 256 or more"):
        BPETokenizer.train(TEXT, vocab_size=100)
    with pytest.raises(ValueError, match="'word'.*char, bpe"):
        build_tokenizer("word", TEXT, 300)
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        tokenizer_from_json(json.dumps({"kind": "wordpiece"}))


def test_build_tokenizer_char_covers_held_out_characters():
    tok = build_tokenizer("char", "aab", 0, held_out=["bcz"])
    assert tok.chars == "abcz"
    assert isinstance(build_tokenizer("bpe", TEXT, 260), BPETokenizer)


# ---------------------------------------------------------------------------------------- data module
def test_contiguous_split_and_shifted_blocks(tmp_path):
    path = _write(tmp_path, TEXT)
    dm = _module(tmp_path, str(path), val_fraction=0.25)
    texts = dm._split_texts()
    n = int(len(TEXT) * 0.75)
    assert texts["train"] == TEXT[:n] and texts["train"] + texts["val"] == TEXT and texts["test"] == texts["val"]
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.split_tokens("train"), dm.split_tokens("val")
    assert train.dtype == torch.int64 and len(train) == n and len(val) == len(TEXT) - n
    assert dm.tokenizer.decode(train) + dm.tokenizer.decode(val) == TEXT

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    blocks = TokenBlocks(train, 8)
    assert len(blocks) == n - 8 and len(dm.train_dataloader()) == (n - 8) // 4
    bx, by = blocks.__getitems__([0, 5, n - 9])
    assert torch.equal(bx[1], train[5:13]) and torch.equal(by[1], train[6:14]) and torch.equal(by[2], train[-8:])


def test_validation_blocks_fixed_and_non_overlapping(tmp_path):
    dm = _module(tmp_path, str(_write(tmp_path, TEXT)), val_fraction=0.2, block_size=16, batch_size=3)
    dm.setup("validate")
    val = dm.split_tokens("val")
    batches = list(dm.val_dataloader())
    xs = torch.cat([x for x, _ in batches])  # (num_blocks, T)
    ys = torch.cat([y for _, y in batches])
    assert len(xs) == (len(val) - 1) // 16
    starts = []
    for i in range(len(xs)):  # every block is one of the non-overlapping ones, each exactly once
        (match,) = [s for s in range(0, len(val) - 16, 16) if torch.equal(xs[i], val[s : s + 16])]
        assert torch.equal(ys[i], val[match + 1 : match + 17])
        starts.append(match)
    assert sorted(starts) == list(range(0, 16 * len(xs), 16))
    assert starts != sorted(starts)  # scattered: the first batches sample the whole split
    again = torch.cat([x for x, _ in dm.val_dataloader()])
    assert torch.equal(xs, again)
    dm.setup("test")
    assert torch.equal(torch.cat([x for x, _ in dm.test_dataloader()]), xs)


def test_vocab_size_before_setup_and_cache_reuse(tmp_path, monkeypatch):
    path = str(_write(tmp_path, TEXT))
    first = _module(tmp_path, path, tokenizer="bpe", bpe_vocab_size=280)
    assert first.vocab_size == 280 and first.block_size == 8 and first.hparams.block_size == 8
    first.prepare_data()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached tokenizer should be reused")

    monkeypatch.setattr(BPETokenizer, "train", no_training)
    second = _module(tmp_path, path, tokenizer="bpe", bpe_vocab_size=280)
    assert second.tokenizer.to_json() == first.tokenizer.to_json()
    second.setup("fit")
    first.setup("fit")
    assert torch.equal(second.split_tokens("train"), first.split_tokens("train"))
    with pytest.raises(AssertionError, match="cached tokenizer"):  # other settings: another cache entry
        _ = _module(tmp_path, path, tokenizer="bpe", bpe_vocab_size=290).vocab_size


def test_char_vocabulary_covers_validation_only_characters(tmp_path):
    text = "abab" * 20 + "xyz!"
    dm = _module(tmp_path, str(_write(tmp_path, text)), block_size=2)
    assert dm.tokenizer.chars == "!abxyz"
    dm.setup("fit")
    assert dm.tokenizer.decode(dm.split_tokens("val")) == text[int(len(text) * 0.9) :]


def test_list_of_files_and_env_vars(tmp_path, monkeypatch):
    a, b = _write(tmp_path, "one\ntwo\n", "a.txt"), _write(tmp_path, "three\nfour\n" * 5, "b.txt")
    monkeypatch.setenv("TEXT_DIR", str(tmp_path))
    dm = _module(tmp_path, ["$TEXT_DIR/a.txt", "${TEXT_DIR}/b.txt"], block_size=2)
    texts = dm._split_texts()
    assert texts["train"] + texts["val"] == a.read_text() + b.read_text()


def test_block_size_too_long_is_one_clear_error(tmp_path):
    dm = _module(tmp_path, str(_write(tmp_path, "a" * 100)), block_size=10)
    with pytest.raises(ValueError, match=r"the val split has 10 tokens, too few for block_size 10 .*--data.block_size"):
        dm.setup("fit")
    small = _module(tmp_path, str(_write(tmp_path, "b" * 100, "b.txt")), block_size=5, batch_size=64, val_fraction=0.5)
    small.setup("fit")
    with pytest.raises(ValueError, match="train split has 45 blocks, fewer than batch_size 64"):
        small.train_dataloader()


def test_missing_file_and_unset_variable(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="text file .*missing.txt' does not exist; point --data.source"):
        _ = _module(tmp_path, str(tmp_path / "missing.txt")).vocab_size
    with pytest.raises(FileNotFoundError, match="'data/input.txt' does not exist"):
        _ = _module(tmp_path, "data/input.txt").vocab_size
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _ = _module(tmp_path, [str(_write(tmp_path, TEXT)), "other"]).vocab_size
    monkeypatch.delenv("GENLIT_NO_SUCH_VAR", raising=False)
    with pytest.raises(ValueError, match=r"\$GENLIT_NO_SUCH_VAR in --data.source .* is not set"):
        _ = _module(tmp_path, "$GENLIT_NO_SUCH_VAR/input.txt").vocab_size


def test_bad_arguments(tmp_path):
    for kwargs, message in (
        ({"block_size": 0}, "block_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"tokenizer": "word"}, "'word'.*char, bpe"),
        ({"tokenizer": "bpe", "bpe_vocab_size": 10}, "bpe_vocab_size 256"),
    ):
        with pytest.raises(ValueError, match=message):
            _module(tmp_path, "x.txt", **kwargs)
    with pytest.raises(RuntimeError, match="setup"):
        _module(tmp_path, "x.txt").train_dataloader()


def test_hugging_face_dataset_with_validation_split(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["alpha beta", None, "gamma"], "n": [1, 2, 3]}), folder / "train-0.parquet")
    pq.write_table(pa.table({"text": ["valid one", "two"], "n": [1, 2]}), folder / "validation-0.parquet")
    dm = _module(tmp_path, str(tmp_path / "ds"), block_size=2)
    assert dm._split_texts() == {"train": "alpha beta\n\ngamma", "val": "valid one\n\ntwo", "test": "valid one\n\ntwo"}
    with pytest.raises(ValueError, match="column 'n' .* not text; set --data.text_column"):
        _ = _module(tmp_path, str(tmp_path / "ds"), text_column="n").vocab_size
    with pytest.raises(ValueError, match=r"column 'body' .* is missing \(columns: text, n\)"):
        _ = _module(tmp_path, str(tmp_path / "ds"), text_column="body").vocab_size


def test_tiny_shakespeare_char(data_dir, tmp_path):
    dm = _module(tmp_path, "$GENLIT_DATA_DIR/tinyshakespeare/input.txt", block_size=64, batch_size=12)
    assert dm.vocab_size == 65
    dm.setup("fit")
    assert len(dm.split_tokens("train")) == 1_003_854 and len(dm.split_tokens("val")) == 111_540
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert dm.tokenizer.decode(dm.split_tokens("val")[:1000]) == text[1_003_854:1_004_854]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (12, 64) and torch.equal(x[:, 1:], y[:, :-1])
