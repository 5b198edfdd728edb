"""TextDataModule's storages: disk (memory-mapped token files) gives memory's tokenizer, tokens and batches;
chunked encoding equals whole-text encoding; stream (a Hugging Face dataset read as it streams) splits rows
across ranks, holds validation out, and resumes from a StatefulDataLoader state; the error lines."""

import io
import json
import pickle
import random
import re
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import pre_tokenizers

import genlit.data.text_sources as text_sources
import genlit.data.token_files as token_files
from genlit.data.text import TextDataModule
from genlit.data.text_stream import StreamBlocks, TextStream
from genlit.data.token_files import TokenFile, open_token_files, safe_chunks, token_dtype, write_token_files
from genlit.data.tokenizers import BPETokenizer, text_chunks

ROWS = [f"row {i}: " + " ".join(f"w{(i * 7 + j) % 50}" for j in range(12 + i % 9)) for i in range(240)]
SHARDS = 4


def _module(tmp_path: Path, source, **kwargs) -> TextDataModule:
    kwargs.setdefault("block_size", 8)
    kwargs.setdefault("batch_size", 4)
    return TextDataModule(source, cache_dir=str(tmp_path / "cache"), **kwargs)


def _ready(dm: TextDataModule) -> TextDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _batches(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


@pytest.fixture
def rows_dataset(tmp_path, monkeypatch) -> Path:
    """A local parquet dataset of ``ROWS`` in ``SHARDS`` files (a train split only)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    size = len(ROWS) // SHARDS
    for s in range(SHARDS):
        pq.write_table(pa.table({"text": ROWS[s * size : (s + 1) * size]}), folder / f"train-{s}.parquet")
    return tmp_path / "ds"


def _stream_module(tmp_path: Path, source: Path, **kwargs) -> TextDataModule:
    kwargs = {"tokenizer": "bpe", "bpe_vocab_size": 300, "storage": "stream", "val_rows": 20, **kwargs}
    return _module(tmp_path, str(source), tokenizer_sample_chars=4000, **kwargs)


def _row_ids(text: str) -> set[int]:
    return {int(i) for i in re.findall(r"row (\d+):", text)}


# ------------------------------------------------------------------------------------------------ disk
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_disk_equals_memory_on_tiny_shakespeare(data_dir, tmp_path, monkeypatch, tokenizer):
    monkeypatch.setattr(text_sources, "_READ_BYTES", 1 << 16)  # read and encode in many pieces
    monkeypatch.setattr(token_files, "_ENCODE_CHARS", 1 << 15)
    source = "$GENLIT_DATA_DIR/tinyshakespeare/input.txt"
    if tokenizer == "bpe":  # its first 300,000 characters: training and encoding it twice takes seconds
        source = str(tmp_path / "shakespeare.txt")
        Path(source).write_text((data_dir / "tinyshakespeare" / "input.txt").read_text()[:300_000])
    kwargs = {"tokenizer": tokenizer, "bpe_vocab_size": 300, "block_size": 64, "batch_size": 12}
    memory = _ready(_module(tmp_path, source, **kwargs))
    disk = _ready(_module(tmp_path, source, storage="disk", **kwargs))
    assert disk.tokenizer.to_json() == memory.tokenizer.to_json()
    for split in ("train", "val", "test"):
        assert torch.equal(disk.split_tokens(split), memory.split_tokens(split))
    mapped = disk._corpora["train"]
    assert isinstance(mapped, TokenFile) and mapped.array().dtype == np.uint16
    assert len(pickle.dumps(mapped)) < 1000  # a worker gets the path, not the tokens
    torch.manual_seed(0)
    first = _batches(memory.train_dataloader(), 3)
    torch.manual_seed(0)
    assert _same(_batches(disk.train_dataloader(), 3), first)
    assert first[0][0].dtype == torch.int64 and first[0][0].shape == (12, 64)
    assert _same(_batches(disk.val_dataloader(), 2), _batches(memory.val_dataloader(), 2))


def test_disk_reads_in_pieces_like_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(text_sources, "_READ_BYTES", 7)  # multi-byte characters straddle the reads
    monkeypatch.setattr(token_files, "_ENCODE_CHARS", 23)
    one, two = tmp_path / "a.txt", tmp_path / "b.txt"
    one.write_bytes(("café  naïve 日本語\n\tTabs ok 🙂\r\n" * 20 + "last").encode())
    two.write_bytes(("word" + " second file, words and  spaces\n\n" * 15).encode())  # "lastword": one word
    sources = [str(one), str(two)]
    memory = _ready(_module(tmp_path, sources, tokenizer="bpe", bpe_vocab_size=300))
    disk = _ready(_module(tmp_path, sources, tokenizer="bpe", bpe_vocab_size=300, storage="disk"))
    assert disk.tokenizer.to_json() == memory.tokenizer.to_json()
    for split in ("train", "val"):
        assert torch.equal(disk.split_tokens(split), memory.split_tokens(split))
    chars = _ready(_module(tmp_path, sources, storage="disk"))
    assert chars.tokenizer.chars == _module(tmp_path, sources).tokenizer.chars


def test_disk_dataset_source_equals_memory(tmp_path, rows_dataset):
    for source in (rows_dataset, rows_dataset / "data" / "train-1.parquet"):  # carved / one parquet file
        memory = _ready(_module(tmp_path, str(source), tokenizer="bpe", bpe_vocab_size=300))
        disk = _ready(_module(tmp_path, str(source), tokenizer="bpe", bpe_vocab_size=300, storage="disk"))
        assert disk.tokenizer.to_json() == memory.tokenizer.to_json()
        for split in ("train", "val", "test"):
            assert torch.equal(disk.split_tokens(split), memory.split_tokens(split))
    pq.write_table(pa.table({"text": ["held out", None, "rows"]}), rows_dataset / "data" / "validation-0.parquet")
    own = _ready(_module(tmp_path, str(rows_dataset), storage="disk"))
    assert own.tokenizer.decode(own.split_tokens("val")) == "held out\n\nrows" == own.split_text("test")


def test_chunked_encoding_equals_whole_text_for_bpe():
    rows = [f"Row {i} says: it's {i * 3.5} o'clock,\tfine ; ok" for i in range(60)]  # one line each
    text = "\n\n".join(rows) + "  naïve café, 日本語 🙂\r\n trailing  \n\n"
    assert len(list(text_chunks(text, 50))) == 1  # no line break between two non-space characters
    chunks = list(safe_chunks([text[i : i + 37] for i in range(0, len(text), 37)], 50))
    assert len(chunks) > 20 and "".join(chunks) == text
    bpe = BPETokenizer.train(text, vocab_size=320)
    assert [i for chunk in chunks for i in bpe.encode(chunk)] == bpe.encode(text)
    assert BPETokenizer.train(iter(chunks), vocab_size=320).to_json() == bpe.to_json()


def test_every_cut_leaves_the_pre_tokens_of_the_whole():
    split = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str
    alphabet = [*"ab1 '\n\t\r.,sdlmtv\x0b\x0c\x1c\x85\u2028\u3000\xa0é日!?", "'s", "'ll", "  ", "\n\n"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        whole = [token for token, _ in split(text)]
        for cut in token_files._CUT.finditer(text):
            left, right = text[: cut.start()], text[cut.start() :]
            assert [t for t, _ in split(left)] + [t for t, _ in split(right)] == whole, (text, cut.start())


def test_token_file_dtype(tmp_path):
    assert token_dtype(65) == token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    ids = [0, 70_000, 65_535, 1]
    write_token_files(tmp_path, {"train": lambda: iter(["ab", "cd"])}, lambda chunk: ids, vocab_size=70_001)
    (path,) = tmp_path.glob("train.*")
    assert path.name == "train.uint32" and path.stat().st_size == 2 * len(ids) * 4
    corpus = open_token_files(tmp_path)["train"]
    assert len(corpus) == 8 and torch.equal(corpus.tensor(), torch.tensor(ids * 2))
    assert torch.equal(corpus[torch.tensor([[1, 2], [4, 5]])], torch.tensor([[70_000, 65_535], [0, 70_000]]))


def test_disk_bad_utf8_names_the_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text\n" * 3 + b"\xff rest")
    for storage in ("memory", "disk"):
        with pytest.raises(ValueError, match=r"is not UTF-8 text \(bad byte at offset 30\); convert it"):
            _ = _module(tmp_path, str(path), storage=storage).vocab_size


# ---------------------------------------------------------------------------------------------- stream
def test_stream_ranks_read_disjoint_rows(tmp_path, rows_dataset):
    stream = TextStream(str(rows_dataset), "text", val_rows=20, sample_chars=4000)
    assert stream.held_out == ROWS[:20] and stream.sample.startswith(ROWS[20])
    shares = [{example["text"] for example in stream.rows("train", rank, 2)} for rank in (0, 1)]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(ROWS)
    tokenizer = BPETokenizer.train(stream.sample, 300)
    seen = []
    for rank in (0, 1):  # one shuffled pass of the blocks each rank trains on
        blocks = StreamBlocks(stream.rows("train", rank, 2), "text", tokenizer, 8, seed=3, shuffle_buffer=16)
        tokens = []
        for block in blocks:
            if blocks.state_dict()["pass"] > 0:
                break
            tokens += block[:-1].tolist()
        seen.append(_row_ids(tokenizer.decode(tokens)))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) > 200


def test_stream_holds_validation_out_and_trains_on_the_rest(tmp_path, rows_dataset):
    dm = _ready(_stream_module(tmp_path, rows_dataset, block_size=16, batch_size=4))
    assert dm.vocab_size == 300 and dm.tokenizer.decode(dm.split_tokens("val")) == "\n\n".join(ROWS[:20])
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    seen = set().union(*(_row_ids(dm.tokenizer.decode(b)) for x, _ in _batches(dm.train_dataloader(), 60) for b in x))
    assert len(seen) > 30 and not seen & set(range(20))
    with pytest.raises(ValueError, match="streamed, never held as tokens"):
        dm.split_tokens("train")


def test_stream_uses_the_dataset_validation_split(tmp_path, rows_dataset):
    pq.write_table(
        pa.table({"text": ["valid one " * 9, "valid two " * 9]}), rows_dataset / "data" / "validation-0.parquet"
    )
    dm = _ready(_stream_module(tmp_path, rows_dataset))
    assert TextStream(str(rows_dataset), "text", 20, 4000).held_out == []
    text = dm.tokenizer.decode(torch.cat([x.flatten() for x, _ in dm.val_dataloader()]))
    assert "valid one" in text and "valid two" in text and not _row_ids(text)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_from_a_loader_state(tmp_path, rows_dataset, workers):
    dm = _ready(
        _stream_module(tmp_path, rows_dataset, shuffle_buffer=1, num_workers=workers, block_size=16, batch_size=8)
    )
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in range(7):
        next(it)
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)  # as a checkpoint holds it: plain values only
    expected = [next(it) for _ in range(150)]  # into the next pass over the rows
    assert re.search(r'"pass": [1-9]', json.dumps(loader.state_dict()))
    fresh = dm.train_dataloader()
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert _same(_batches(fresh, 150), expected)


def test_stream_errors_are_one_line(tmp_path, rows_dataset):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("some text\n" * 50)
    cases = [
        ({"storage": "ram"}, "storage 'ram' is not known; use one of memory, disk, stream"),
        ({"storage": "stream"}, "tokenizer char needs the whole text.*--data.tokenizer bpe or --data.storage disk"),
        ({"storage": "stream", "tokenizer": "bpe", "shuffle_buffer": 0}, "shuffle_buffer, val_rows"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            _module(tmp_path, str(text_file), **kwargs)
    with pytest.raises(ValueError, match="not text files .*corpus.txt.*use --data.storage disk"):
        _ = _module(tmp_path, str(text_file), storage="stream", tokenizer="bpe").vocab_size
    dm = _ready(_stream_module(tmp_path, rows_dataset))
    dm.trainer = SimpleNamespace(max_steps=-1, callbacks=[], global_rank=0, world_size=1)
    with pytest.raises(ValueError, match="repeats the training split without end; set --trainer.max_steps"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match="never read whole"):
        dm.split_text("train")
