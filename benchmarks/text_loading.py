"""Tokens per second that each TextDataModule storage delivers on Tiny Shakespeare, next to the tokens per second the
CPU GPT recipe trains at, measured in the same run: does the loader keep up with the model?

Loaders, each with ``num_workers`` 0 and 2, at the recipe's batch (12 blocks of 64 tokens):

- ``memory`` and ``disk``: ``$GENLIT_DATA_DIR/tinyshakespeare/input.txt`` with character tokens (the recipe's data);
  ``disk`` gathers every batch from the memory-mapped token file.
- ``stream``: the same text as a parquet dataset of its paragraphs in 4 files (built in a temporary folder; a
  stream reads datasets, not text files), tokenised on the fly by a byte-level BPE of 512 tokens (a stream refuses
  ``char``), shuffle buffer 1000.

A loader's figure: ``--batches`` training batches after ``--loader-warmup`` (workers started, first batches
prefetched), tokens/s = batches x 12 x 64 / seconds. The model's: the model of
experiments/autoregressive/gpt_shakespeare_char_cpu.yaml built with GenlitCLI, a fresh copy per repeat trained for
``--steps`` optimizer steps after ``--warmup`` under a quiet Trainer (no logger, checkpoints or validation; the YAML's
gradient clipping) on the in-memory loader with no workers, as the recipe runs. Every repeat times all loaders and
the model in turn (house rule 13: a slow phase of these shared machines hits them alike); the medians are printed,
each loader's beside its ratio to the model's. Also printed: each storage's cold-cache preparation (tokenizer and
encoding), once.

    python -m benchmarks.text_loading [--repeats 3] [--batches 300] [--steps 40] [--warmup 5]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.args import positive_int
from benchmarks.plain_gpt import BLOCK, shakespeare_path
from benchmarks.timing import BatchTimer, quiet_trainer
from genlit.cli import GenlitCLI
from genlit.data.text import TextDataModule

CONFIG = "experiments/autoregressive/gpt_shakespeare_char_cpu.yaml"
BATCH, FILES = 12, 4


def paragraph_dataset(folder: Path) -> Path:
    """Tiny Shakespeare as a parquet dataset (a ``text`` column of its paragraphs) in ``FILES`` files."""
    paragraphs = [p for p in shakespeare_path().read_text(encoding="utf-8").split("\n\n") if p]
    (folder / "data").mkdir(parents=True)
    size = -(-len(paragraphs) // FILES)
    for i in range(FILES):
        table = pa.table({"text": paragraphs[i * size : (i + 1) * size]})
        pq.write_table(table, folder / "data" / f"train-{i}.parquet")
    return folder


def prepared(cache: Path, **kwargs) -> tuple[TextDataModule, float]:
    """A TextDataModule at the recipe's batch and context, prepared and set up, and the seconds that took."""
    start = time.perf_counter()
    data = TextDataModule(block_size=BLOCK, batch_size=BATCH, cache_dir=str(cache), **kwargs)
    data.prepare_data()
    data.setup("fit")
    return data, time.perf_counter() - start


def loader_rate(data: TextDataModule, workers: int, batches: int, warmup: int) -> float:
    """Tokens/s of ``data``'s training loader with ``workers`` workers, over ``batches`` after ``warmup``."""
    data.hparams.num_workers = workers
    iterator = iter(data.train_dataloader())
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator  # stops the workers
    data.hparams.num_workers = 0
    return batches * BATCH * BLOCK / seconds


def model_rate(cli: GenlitCLI, data: TextDataModule, steps: int, warmup: int) -> float:
    """Training tokens/s of a fresh copy of the recipe's model over ``steps`` optimizer steps after ``warmup``."""
    timer = BatchTimer(warmup)
    trainer = quiet_trainer(warmup + steps, timer, False, gradient_clip_val=cli.trainer.gradient_clip_val)
    trainer.fit(copy.deepcopy(cli.model), datamodule=data)
    return timer.rate(steps) * BATCH * BLOCK


def storages(work: Path) -> dict[str, TextDataModule]:
    """The three storages' DataModules, prepared from a cold cache under ``work``; prints how long each took."""
    text = str(shakespeare_path())
    memory, memory_s = prepared(work / "memory", source=text)
    disk, disk_s = prepared(work / "disk", source=text, storage="disk")
    paragraphs = str(paragraph_dataset(work / "paragraphs"))
    stream, stream_s = prepared(
        work / "stream", source=paragraphs, tokenizer="bpe", bpe_vocab_size=512, storage="stream"
    )
    tokens = len(memory.split_tokens("train"))
    print(f"cold-cache preparation: memory {memory_s:.2f} s, disk {disk_s:.2f} s (char tokens, {tokens:,} in train), "
          f"stream {stream_s:.2f} s (BPE trained on its sample, held-out rows encoded)")  # fmt: skip
    return {"memory": memory, "disk": disk, "stream": stream}


def recipe(work: Path) -> GenlitCLI:
    """The CPU recipe's model, data and trainer settings as its YAML builds them (no logger; cache under ``work``)."""
    args = ["--config", CONFIG, "--trainer.logger", "false", "--data.init_args.cache_dir", str(work)]
    with patch.object(sys, "argv", sys.argv[:1]):  # this script's own options are not the CLI's
        return GenlitCLI(args=args, run=False)


def main() -> None:
    """Alternate every loader and the model ``--repeats`` times; print tokens/s and each loader's ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--batches", type=positive_int, default=300, help="timed batches per loader")
    parser.add_argument("--loader-warmup", type=positive_int, default=10)
    parser.add_argument("--steps", type=positive_int, default=40, help="timed optimizer steps of the model")
    parser.add_argument("--warmup", type=positive_int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; batch {BATCH} x {BLOCK} = "
          f"{BATCH * BLOCK} tokens; loaders: {args.batches} batches after {args.loader_warmup}; model: {args.steps} "
          f"steps after {args.warmup}")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="text_loading_"))
    try:
        data, cli = storages(work), recipe(work)
        loops: dict[str, Callable[[], float]] = {}
        for name, module in data.items():
            for w in (0, 2):
                loops[f"{name} w{w}"] = lambda m=module, w=w: loader_rate(m, w, args.batches, args.loader_warmup)
        loops["model"] = lambda: model_rate(cli, data["memory"], args.steps, args.warmup)
        report(alternate(loops, args.repeats))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[float]]) -> None:
    """The median tokens/s of every loader and its ratio to the model's."""
    model = statistics.median(runs["model"])
    print(f"median tokens/s; the model ({CONFIG}) trains {model:,.0f} tokens/s:")
    for name, rates in runs.items():
        if name != "model":
            rate = statistics.median(rates)
            print(f"  {name:<10} {rate:>12,.0f} tokens/s  {rate / model:8.1f}x the model")


def alternate(loops: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every loop once per repeat, in turn; print each repeat; return every loop's tokens/s per repeat."""
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(repeats):
        for name, loop in loops.items():
            torch.manual_seed(r)
            runs[name].append(loop())
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()) + " tokens/s", flush=True)
    return runs


if __name__ == "__main__":
    main()
