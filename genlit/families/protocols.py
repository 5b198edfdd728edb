"""Capabilities that only some families have, as ``typing.Protocol``s.

Callbacks and commands test for a capability with ``isinstance(module, Protocol)`` and never ask which family
a module is, so a new family that offers the methods gets the callbacks and commands that use them. Every
generative family offers :class:`Generative` (the contract of :class:`~genlit.families.base.GenerativeFamily`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class Generative(Protocol):
    """Draws samples (the family contract): every generative family."""

    conditional: bool
    num_classes: int
    ema: nn.Module | None  # the EMA copy of the averaged network, if the family keeps one

    def sample(self, num: int, *, labels=None, generator=None, use_ema: bool = True, **options: Any) -> Any: ...

    def sample_many(self, indices: Sequence[int], *, seed: int, batch_size: int = 500, **options: Any) -> Any: ...

    def check_sample_options(self, **options: Any) -> None: ...

    def eval_mode(self) -> AbstractContextManager[None]: ...

    def ema_weights(self, use_ema: bool = True) -> AbstractContextManager[None]: ...


@runtime_checkable
class DataShaped(Protocol):
    """Samples are tensors (N, *data_shape) in data space: images (C, H, W) in [-1, 1], or points (D,)."""

    data_shape: tuple[int, ...]


@runtime_checkable
class Reconstructs(Protocol):
    """Reconstructs data through a bottleneck: ``reconstruct(x, labels)`` (B, *data_shape) in data space (VAEs,
    VQ-VAEs)."""

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LatentVariable(Reconstructs, Protocol):
    """An encoder to a latent space of ``latent_dim`` and a decoder back (VAE-like)."""

    latent_dim: int

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class DiscreteLatent(Reconstructs, Protocol):
    """An encoder to a grid of discrete codes and a decoder back (a VQ-VAE): ``encode_codes(x)`` gives int64
    (B, *code_shape) ids in ``0 .. num_codes - 1``, ``decode_codes(codes)`` images (B, *data_shape) in [-1, 1]. A
    prior over the codes (an autoregressive model of the flattened grids) makes it a sampler."""

    num_codes: int
    code_shape: tuple[int, ...]

    def encode_codes(self, x: Tensor) -> Tensor: ...

    def decode_codes(self, codes: Tensor) -> Tensor: ...


@runtime_checkable
class Likelihood(Protocol):
    """A (bound on the) negative log-likelihood of data, reported by ``genlit test`` as ``test/nll*``."""

    def nll(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class AnomalyScorer(Likelihood, Protocol):
    """Per-example anomaly scores of images beside the likelihood (:mod:`genlit.families.anomaly`): a dict of
    (B,) tensors, higher = more anomalous."""

    data_shape: tuple[int, ...]

    def anomaly_scores(self, x: Tensor, nll: Tensor | None = None, batch_idx: int = 0) -> dict[str, Tensor]: ...


@runtime_checkable
class TextModel(Protocol):
    """Text in, text out: a tokenizer stored with the model, prompts, streamed generation, per-token NLL."""

    tokenizer: Any
    unit: str

    def encode_prompt(self, prompt: str) -> Tensor: ...

    def generate(self, prompt: Tensor, max_new_tokens: int, **options: Any) -> Tensor: ...

    def token_nll(self, x: Tensor, y: Tensor) -> Tensor: ...

    def units_of(self, tokens: Tensor) -> Tensor: ...


@runtime_checkable
class MaskFiller(Protocol):
    """Fills the ``[MASK]`` tokens of a text (a masked language model): prompts with masks, or masks alone."""

    tokenizer: Any

    def encode_prompt(self, prompt: str) -> Tensor: ...

    def free_ids(self, num: int, length: int | None = None) -> Tensor: ...

    def fill(self, ids: Tensor, steps: int = 8, **options: Any) -> Tensor: ...

    def decode(self, ids: Tensor) -> str: ...


@runtime_checkable
class Adversarial(Protocol):
    """A generator and a discriminator trained against each other, each with its own optimizer."""

    generator: nn.Module
    discriminator: nn.Module


@runtime_checkable
class Translator(Protocol):
    """Translates images between two domains A and B (unpaired image-to-image translation: CycleGAN). Images are
    tensors (N, *shape_a) or (N, *shape_b) in [-1, 1]; ``direction`` is ``"AB"`` (A to B) or ``"BA"``."""

    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]

    def translate(self, x: Tensor, direction: str) -> Tensor: ...


@dataclass(frozen=True)
class OnnxInput:
    """One input of an :class:`OnnxGraph`: its name, its shape (the strings ``"batch"`` and ``"sequence"`` name the
    dynamic axes), its dtype and, for integer inputs, the range ``[0, high)`` of valid values (token ids, labels,
    timesteps)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None


@dataclass(frozen=True)
class OnnxGraph:
    """The network forward a family samples with, to export to ONNX: ``module(*inputs)`` -> one tensor ``output``.
    ``description`` says what it is (``the generator: z -> images``); ``max_sequence`` bounds a ``"sequence"`` axis."""

    module: nn.Module
    inputs: tuple[OnnxInput, ...]
    output: str
    description: str
    max_sequence: int | None = None


@runtime_checkable
class OnnxExportable(Protocol):
    """Has one network forward that sampling repeats or ends with, which ``genlit export --format onnx`` writes (the
    GANs' generator, the diffusion denoiser, the language models' token logits); the loop around it stays in Python."""

    def onnx_graph(self) -> OnnxGraph: ...
