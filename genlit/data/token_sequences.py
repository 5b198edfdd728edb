"""Fixed-length sequences of integer token ids for autoregressive models: a prior over discrete codes.

Each row of the source is one independent sequence, e.g. the code grid of one image under a VQ-VAE flattened
row-major to (L,) = (H * W,). The autoregressive family models them as it models text, with no tokenizer: its
vocabulary is the codes plus one begin-of-sequence token (BOS), whose id is the number of codes, so the first
code is predicted from BOS alone and a sample starts from BOS (as PixelCNN / transformer priors over VQ-VAE
codes start from nothing: van den Oord et al. 2017, https://arxiv.org/abs/1711.00937; Esser et al. 2021,
https://arxiv.org/abs/2012.09841).

The source is a local ``.npy``, ``.npz`` (array ``arr_0``, or ``key``) or ``.pt`` file holding an integer array
(N, L), or (N, H, W) grids. It is held in memory. Validation and test are the same fixed ``val_fraction`` of the
rows, chosen by a permutation drawn from ``seed`` (not the last rows: code files are often in the order of
their dataset, e.g. sorted by class, and a tail would validate on one class); the rest trains.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlit.data.tensors import tensor_loader

SUFFIXES = (".npy", ".npz", ".pt")
_ENV_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_SPLITS = ("train", "val", "test")


class TokenSequences(Dataset):
    """Sequences of token ids (N, L) served as next-token pairs ``(x, y)`` of int64 (L,) each (a batch (B, L)
    at once through ``__getitems__``): ``x = [bos, c_0 .. c_{L-2}]`` and ``y = [c_0 .. c_{L-1}]``."""

    def __init__(self, codes: Tensor, bos_id: int) -> None:
        self.codes, self.bos_id = codes, bos_id  # (N, L), any integer dtype

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        y = self.codes[torch.as_tensor(indices, dtype=torch.long)].long()  # (B, L)
        bos = torch.full((len(y), 1), self.bos_id, dtype=torch.long)  # (B, 1)
        return torch.cat([bos, y[:, :-1]], 1), y  # (B, L) each: x is y shifted right by one, after BOS


def load_token_array(path: str, key: str | None = None) -> Tensor:
    """The integer token ids (N, L) of a ``.npy``, ``.npz`` (``key``, default ``arr_0``) or ``.pt`` file; (N, H, W)
    grids are flattened row-major to (N, H * W). One clear error for a file of another kind, dtype or shape, or
    with negative ids."""
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"--data.source {path!r} is a {suffix or 'suffix-less'} file; give a .npy, .npz or .pt file "
                         "holding integer token ids (N, L)")  # fmt: skip
    if key is not None and suffix != ".npz":
        raise ValueError(f"--data.key {key!r} picks an array of an .npz file, but {path!r} is a {suffix} file; drop it")
    if suffix == ".pt":
        array = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(array, Tensor):
            raise ValueError(f"{path!r} holds a {type(array).__name__}, not a tensor; torch.save the (N, L) integer "
                             "tensor of token ids itself")  # fmt: skip
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            name = key or "arr_0"
            if name not in arrays.files:
                raise ValueError(f"{path!r} has no array {name!r} (it has {', '.join(arrays.files) or 'none'}); "
                                 "name the array of token ids with --data.key")  # fmt: skip
            array = torch.from_numpy(arrays[name])
    else:
        array = torch.from_numpy(np.load(path, allow_pickle=False))
    return _checked(array, path)


def _checked(array: Tensor, path: str) -> Tensor:
    """``array`` as (N, L) token ids, or one clear error naming the fix."""
    if array.dtype == torch.bool or array.is_floating_point() or array.is_complex():
        kind = str(array.dtype).removeprefix("torch.")
        raise ValueError(f"{path!r} holds {kind} values; token ids must be integers: save them as int64 "
                         "(e.g. codes.astype(np.int64))")  # fmt: skip
    if array.dim() not in (2, 3):
        raise ValueError(f"{path!r} holds an array of shape {tuple(array.shape)}; token ids must be (N, L) sequences "
                         "or (N, H, W) grids")  # fmt: skip
    array = array.flatten(1)  # (N, L): a grid row-major, as a VQ-VAE's codes are read
    if array.numel() == 0:
        raise ValueError(f"{path!r} holds no token ids (shape {tuple(array.shape)}); give at least one sequence")
    low = int(array.min())
    if low < 0:
        raise ValueError(f"{path!r} holds the negative token id {low}; ids must be 0 .. num_codes - 1 (shift them)")
    return array


def resolve_source(source: str) -> str:
    """Expand ``~`` and ``$VARS`` in ``source``; one clear error for an unset variable or a missing file."""
    expanded = os.path.expandvars(os.path.expanduser(source))
    unset = _ENV_VAR.search(expanded)
    if unset:
        name = unset.group(1)
        raise ValueError(f"environment variable ${name} in --data.source {source!r} is not set; export "
                         f"{name}=/path/to/data or pass a full path")  # fmt: skip
    if not os.path.isfile(expanded):
        origin = f" (from {source!r})" if expanded != source else ""
        raise FileNotFoundError(f"token file {expanded!r}{origin} does not exist; point --data.source at a .npy, "
                                ".npz or .pt file of integer token ids (N, L)")  # fmt: skip
    return expanded


class TokenSequenceDataModule(L.LightningDataModule):
    """Independent fixed-length sequences of token ids for next-token prediction (see the module docstring).

    Args:
        source: a ``.npy``, ``.npz`` or ``.pt`` file of integer token ids (N, L), or (N, H, W) grids flattened
            row-major; ``~`` and ``$VARS`` are expanded (an unset variable is an error).
        num_codes: the number of distinct token ids of the data (a VQ-VAE's codebook size), which must exceed
            every id; default: the largest id + 1. The model's vocabulary, :attr:`vocab_size`, is one more (BOS).
            (Not named ``vocab_size``: Lightning refuses a DataModule hyperparameter of the model's name with
            another value.)
        key: the array of an ``.npz`` file (default ``arr_0``).
        val_fraction: share of the rows held out for validation (and test), at least one row.
        batch_size: sequences per batch.
        num_workers: DataLoader worker processes.
        seed: the permutation that picks the held-out rows (the same on every rank and run).

    ``vocab_size``, ``block_size``, ``bos_id`` and ``sequence_length`` are available right after construction
    (the CLI links the first two into the model): the first access reads the source. ``tokenizer`` is None, so
    the autoregressive family reports bits per token and samples token ids. Batches are tuples ``(x, y)`` of
    int64 (B, L): ``y`` the sequences, ``x`` the same shifted right by one after BOS. Training batches are
    shuffled, the last incomplete one dropped; validation and test batches come in a fixed order.
    """

    def __init__(
        self,
        source: str,
        num_codes: int | None = None,
        key: str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction {val_fraction} must lie strictly between 0 and 1")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size ({batch_size}) must be >= 1 and num_workers ({num_workers}) >= 0")
        if num_codes is not None and num_codes < 1:
            raise ValueError(f"num_codes must be >= 1 (or unset: the largest id + 1), got {num_codes}")
        if not source:
            raise ValueError("--data.source is empty; give a .npy, .npz or .pt file of integer token ids (N, L)")
        self.save_hyperparameters()
        self._codes: Tensor | None = None  # (N, L), read on first use
        self._num_codes: int | None = None
        self._splits: dict[str, TokenSequences] = {}

    # ----------------------------------------------------------------------------------------- the data
    @property
    def codes(self) -> Tensor:
        """Every sequence of the source (N, L), as ids 0 .. bos_id - 1 (read and checked on first access)."""
        if self._codes is None:
            path = resolve_source(self.hparams.source)
            codes = load_token_array(path, self.hparams.key)  # (N, L)
            largest, given = int(codes.max()), self.hparams.num_codes
            if given is not None and given <= largest:
                raise ValueError(
                    f"--data.num_codes {given} but {path!r} holds the token id {largest}; give "
                    f"--data.num_codes {largest + 1} or more, or leave it unset (largest id + 1)"
                )
            self._num_codes = given if given is not None else largest + 1
            # int32 halves the memory of int64 ids; batches are made int64 as they are gathered
            self._codes = codes.to(torch.int32 if self._num_codes < 2**31 else torch.int64)
        return self._codes

    @property
    def num_codes(self) -> int:
        """The number of distinct token ids of the data: ``num_codes`` as given, else the largest id + 1."""
        _ = self.codes
        return self._num_codes

    @property
    def bos_id(self) -> int:
        """The begin-of-sequence token: the id after the codes (``num_codes``), the model's last id."""
        return self.num_codes

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the codes and BOS (``bos_id + 1``)."""
        return self.bos_id + 1

    @property
    def sequence_length(self) -> int:
        """Tokens per sequence, L."""
        return self.codes.size(1)

    @property
    def block_size(self) -> int:
        """The model's context: one sequence, L positions (BOS and the first L - 1 codes predict the L codes)."""
        return self.sequence_length

    @property
    def tokenizer(self) -> None:
        """None: token ids are the data (the autoregressive family reads this at setup)."""
        return None

    # ------------------------------------------------------------------------------------------ splits
    def setup(self, stage: str | None = None) -> None:
        """Split the rows (once): a fixed ``val_fraction`` of them, drawn with ``seed``, validates and tests."""
        if self._splits:
            return
        codes, hp = self.codes, self.hparams
        num = len(codes)
        num_val = max(1, math.ceil(num * hp.val_fraction))
        if num - num_val < hp.batch_size:
            raise ValueError(
                f"{hp.source!r} has {num} sequences: {num - num_val} train after holding out {num_val}, fewer than "
                f"batch_size {hp.batch_size}; lower --data.batch_size or --data.val_fraction, or give more sequences"
            )
        order = torch.randperm(num, generator=torch.Generator().manual_seed(hp.seed))  # (N,)
        val_rows, train_rows = order[:num_val].sort().values, order[num_val:].sort().values
        val = TokenSequences(codes[val_rows], self.bos_id)
        self._splits = {"train": TokenSequences(codes[train_rows], self.bos_id), "val": val, "test": val}

    def split(self, name: str) -> TokenSequences:
        """The sequences of ``train``, ``val`` or ``test`` (after ``setup``)."""
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; use train, val or test")
        if not self._splits:
            raise RuntimeError("TokenSequenceDataModule.setup() has not run yet; call dm.setup() or let the Trainer")
        return self._splits[name]

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last incomplete batch is dropped."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order (the validation rows)."""
        return self._loader("test")

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return tensor_loader(self.split(name), self.hparams.batch_size, train, num_workers=workers,
                             persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())  # fmt: skip
