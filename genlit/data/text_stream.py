"""Token blocks of a Hugging Face dataset read as it streams (storage: stream): rows tokenised as they arrive.

:class:`TextStream` opens the dataset with ``datasets.load_dataset(..., streaming=True)`` and reads the start of
its training split once per process: the rows held out for validation (the first ``val_rows``, when the dataset
has no validation split) and the text a byte-level BPE is trained on (the next ``sample_chars`` characters).

:class:`StreamBlocks` serves one DDP rank's share of a split (``datasets.distributed.split_dataset_by_node``); the
DataLoader workers get shards as ``datasets`` assigns them. Each row, preceded by the blank line that separates
rows, is encoded and appended to the tokens left over from the rows before; every ``block_size`` tokens make one
(x, y) block of ``block_size + 1`` tokens (consecutive blocks share one token, as the validation blocks of the
other storages do). The training split is shuffled through a buffer (``datasets``: the shards' order too), and
repeats without end, pass ``p`` reshuffled with ``set_epoch(p)``: ranks then never run out of batches at
different steps, and the run ends at ``max_steps``. Its state (the pass, ``datasets``' position before the
current row, the tokens carried into it, the blocks of it already served) goes into the ``StatefulDataLoader``'s
state in each worker. Resuming is exact with ``shuffle_buffer`` 1; a larger buffer is refilled from the stream
on resume (its rows are lost for that pass: ``datasets`` does not save the buffer).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from genlit.data.hub import load_raw_dataset
from genlit.data.storage import one_input_shard
from genlit.data.text_sources import (
    ROW_SEPARATOR,
    SOURCE_OPTION,
    check_text_column,
    is_text_file,
    resolve_source,
    split_names,
)
from genlit.data.tokenizers import Tokenizer

if TYPE_CHECKING:  # imported where used: `datasets` takes about 2 s to import
    import datasets


def row_digest(row: str) -> bytes:
    """A 128-bit digest of a row's text: how a held-out row is recognised wherever it turns up."""
    return hashlib.blake2b(row.encode(), digest_size=16).digest()


class TextStream:
    """A streamed dataset's splits, and the start of its training split read once (see the module docstring).

    Validation streams the dataset's own validation split (``validation``, ``valid``, ``val``, else ``test``);
    without one, the first ``val_rows`` rows of train are held out (kept as text; training skips every row
    equal to one of them). Test streams the ``test`` split, else is the validation.
    """

    def __init__(self, source: str | list[str], column: str, val_rows: int, sample_chars: int) -> None:
        self.source, self.column = source, column
        path = None if not isinstance(source, str) else resolve_source(source, file_only=False)
        if path is None or is_text_file(path):
            raise ValueError(
                f"storage stream reads a Hugging Face dataset (Hub id, dataset folder, parquet or arrow file), not "
                f"text files such as {source!r}; use --data.storage disk for text files larger than memory"
            )
        self.raw = load_raw_dataset(path, option=SOURCE_OPTION, streaming=True)
        self.val, self.test = split_names(list(self.raw), source)
        for name in dict.fromkeys(n for n in ("train", self.val, self.test) if n):
            check_text_column(self.raw[name].features, column, name, source)
        self.held_out, self.sample = self._read_head(0 if self.val else val_rows, sample_chars)

    def _read_head(self, held_rows: int, sample_chars: int) -> tuple[list[str], str]:
        """The first ``held_rows`` rows of train, and the rows after them up to ``sample_chars`` characters."""
        held, sample, size = [], [], 0
        for example in self.raw["train"].select_columns([self.column]):
            row = example[self.column]
            if row is None:
                continue
            if len(held) < held_rows:
                held.append(row)
            else:
                sample.append(row)
                size += len(row) + len(ROW_SEPARATOR)
                if size >= sample_chars:
                    break
        if not sample:
            raise ValueError(
                f"the train split of {self.source!r} has no text beyond the {len(held)} rows held out for "
                "validation; lower --data.val_rows or give a dataset with more rows"
            )
        return held, ROW_SEPARATOR.join(sample)[:sample_chars]

    def held_out_tokens(self, tokenizer: Tokenizer) -> dict[str, Tensor]:
        """The held-out rows joined and encoded, int64 (N,), for ``val`` (and ``test`` without a test split);
        nothing when the dataset has its own validation split."""
        if self.val is not None:
            return {}
        tokens = torch.tensor(tokenizer.encode(ROW_SEPARATOR.join(self.held_out)), dtype=torch.int64)  # (N,)
        return {"val": tokens, "test": tokens}

    def rows(self, split: str, rank: int, world_size: int) -> datasets.IterableDataset:
        """This rank's share of the text column of ``train``, ``val`` or ``test`` (a split the dataset has)."""
        from datasets.distributed import split_dataset_by_node

        name = {"train": "train", "val": self.val, "test": self.test}[split]
        rows = self.raw[name].select_columns([self.column])
        return split_dataset_by_node(rows, rank=rank, world_size=world_size) if world_size > 1 else rows


class StreamBlocks(IterableDataset):
    """(x, y) token blocks packed from the rows of a streamed split as they are tokenised (see the module
    docstring); ``shuffle_buffer`` None reads the rows in order, once (validation, test)."""

    def __init__(
        self,
        rows: datasets.IterableDataset,
        column: str,
        tokenizer: Tokenizer,
        block_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int | None = None,
        held_out: frozenset[bytes] = frozenset(),
    ) -> None:
        self.rows, self.column, self.tokenizer, self.block_size = rows, column, tokenizer, block_size
        self.seed, self.shuffle_buffer, self.held_out = seed, shuffle_buffer, held_out
        self._state = self._resume = _fresh_state()

    def state_dict(self) -> dict:
        """Where the iteration stands (plain values: it goes into checkpoints that load with weights_only)."""
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        """Continue the next iteration from ``state``."""
        self._resume = dict(state)

    def __iter__(self) -> Iterator[Tensor]:
        state, self._resume = self._resume, _fresh_state()
        epoch, start, carry, skip = state["pass"], state["rows"], state["carry"], state["skip"]
        while True:
            used = False
            for before, row in self._rows_of_pass(epoch, start):
                used = True
                tokens = np.asarray(carry + self.tokenizer.encode(ROW_SEPARATOR + row), dtype=np.int64)  # (n,)
                blocks = (len(tokens) - 1) // self.block_size
                for k in range(skip, blocks):
                    self._state = {"pass": epoch, "rows": before, "carry": carry, "skip": k + 1}
                    yield torch.from_numpy(tokens[k * self.block_size : (k + 1) * self.block_size + 1])  # (T + 1,)
                carry, skip = tokens[blocks * self.block_size :].tolist(), 0
            if self.shuffle_buffer is None or not used:  # one pass; or nothing in this worker's shards
                return
            epoch, start = epoch + 1, None

    def _rows_of_pass(self, epoch: int, start: dict | None) -> Iterator[tuple[dict | None, str]]:
        """``(datasets' state before the row, row)`` for the rows of pass ``epoch``, from ``start`` on; missing
        and held-out rows are skipped."""
        if self.shuffle_buffer is None:
            rows = copy.deepcopy(self.rows)  # a copy: loading a state or an epoch must not outlive this pass
        else:
            rows = self.rows.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer, **one_input_shard())
            rows.set_epoch(epoch)
        if start is not None:
            rows.load_state_dict(start)
        before = start
        for example in rows:
            row, after = example[self.column], rows.state_dict()
            if row is not None and not (self.held_out and row_digest(row) in self.held_out):
                yield before, row
            before = after


def _fresh_state() -> dict:
    return {"pass": 0, "rows": None, "carry": [], "skip": 0}


def stack_blocks(blocks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Collate (T + 1,) blocks into inputs and next-token targets, int64 (B, T) each."""
    tokens = torch.stack(blocks)  # (B, T + 1)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def stream_loader(blocks: StreamBlocks, batch_size: int, num_workers: int) -> StatefulDataLoader:
    """A resumable loader of ``blocks``: each worker batches the blocks of its own shards."""
    return StatefulDataLoader(
        blocks,
        batch_size=batch_size,
        collate_fn=stack_blocks,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
