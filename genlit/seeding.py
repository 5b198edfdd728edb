"""Per-sample seeding: the random draws of sample i depend only on (seed, i).

Whatever the batch size, the device count or the rank that draws it, sample i of a seeded run gets the same
noise, so figures compare samplers and models on the same noise (the per-seed generators of EDM's
``StackedRandomGenerator``, Karras et al. 2022, https://github.com/NVlabs/edm). Each sample has its own CPU
``torch.Generator``, seeded from numpy's ``SeedSequence(seed, spawn_key=(i,))``, the standard way to derive
independent streams from one seed; draws are made on the CPU and moved to the device in one copy, so a
sample's noise is also the same on every device.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def stream_seed(seed: int, index: int) -> int:
    """The 64-bit seed of sample ``index``'s stream under ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seeds and sample indices must be >= 0, got seed {seed} and index {index}")
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


class SampleRNG:
    """The random draws of a batch of samples with global indices ``indices``.

    With a ``seed``, sample ``indices[j]`` draws from its own generator, so row j of every draw depends only on
    (seed, indices[j]). Without one (``seed=None``) the rows come from torch's global generator in one call
    (training-time draws that need no reproducibility).

    Args:
        indices: the samples' global indices (e.g. ``range(start, start + batch)``).
        seed: the run's seed, or None for torch's global generator.
        device: where the draws are returned.
    """

    def __init__(self, indices: Sequence[int] | Tensor, seed: int | None = None, device="cpu") -> None:
        self.indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        if self.indices.dim() != 1:
            raise ValueError(f"sample indices must be one-dimensional, got shape {tuple(self.indices.shape)}")
        self.seed, self.device = seed, torch.device(device)
        self._generators = None if seed is None else [self._generator(int(i)) for i in self.indices]

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(stream_seed(self.seed, index))

    @classmethod
    def for_call(cls, num: int, generator: torch.Generator | SampleRNG | None, device) -> SampleRNG:
        """The draws of a ``sample(num, generator=...)`` call: a ``SampleRNG`` of ``num`` rows as given, a
        ``torch.Generator`` (which picks the seed; indices 0..num-1), or None (torch's global generator)."""
        if isinstance(generator, SampleRNG):
            if len(generator) != num:
                raise ValueError(f"the SampleRNG has {len(generator)} sample indices for {num} samples")
            return generator.to(device)
        if generator is None:
            return cls(range(num), None, device)
        seed = int(torch.randint(2**62, (), generator=generator))
        return cls(range(num), seed, device)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device) -> SampleRNG:
        """The same streams, returning draws on ``device``."""
        self.device = torch.device(device)
        return self

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal draws (N, *shape): row j from sample ``indices[j]``'s stream."""
        return self._draw(torch.randn, shape, dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) draws (N, *shape): row j from sample ``indices[j]``'s stream."""
        return self._draw(torch.rand, shape, dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal draws shaped like ``x`` (N, ...), on its device and in its dtype."""
        if x.shape[0] != len(self):
            raise ValueError(f"x has {x.shape[0]} rows but this SampleRNG draws for {len(self)} samples")
        return self.to(x.device).randn(*x.shape[1:], dtype=x.dtype)

    def _draw(self, fn, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        if self._generators is None:
            return fn((len(self), *shape), dtype=dtype, device=self.device)
        if not self._generators:
            return torch.empty((0, *shape), dtype=dtype, device=self.device)
        rows = [fn(shape, generator=g, dtype=dtype) for g in self._generators]  # CPU draws
        return torch.stack(rows).to(self.device)  # (N, *shape)


def rank_range(num: int, rank: int, world_size: int) -> tuple[int, int]:
    """The sample indices [start, stop) of ``num`` that ``rank`` of ``world_size`` draws: contiguous, disjoint,
    together all of them (the first ``num % world_size`` ranks draw one more). With per-sample seeding the
    ranks together draw exactly the samples one process would."""
    share, extra = divmod(num, world_size)
    start = rank * share + min(rank, extra)
    return start, start + share + (1 if rank < extra else 0)


def rng_states() -> dict:
    """The states of every global random generator a training step may draw from (torch's CPU and CUDA
    generators, numpy's, Python's), for an exact resume."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, keys.tolist(), pos, has_gauss, cached)  # plain values: checkpoints load weights_only
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` captured (CUDA states only where there are as many devices)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
