"""The family contract: what every genlit LightningModule shares, written once.

:class:`~genlit.families.training.TrainingModule` (its own file) holds the optimizer/scheduler plumbing, the cheap
per-step logging, fault tolerance and fine-tuning of every module genlit trains. :class:`GenerativeFamily` adds
what commands, callbacks and notebooks rely on without asking which family a module is:

- ``sample(num, *, labels=None, generator=None, use_ema=True, **options)`` runs in eval mode without
  gradients, restores every sub-module's mode afterwards, and uses the EMA weights where the family keeps
  them. ``options`` are the keyword-only parameters of the family's :meth:`~GenerativeFamily.draw`
  (:meth:`~GenerativeFamily.sample_options`); the commands build their flags from them.
- Per-sample seeding (:class:`genlit.seeding.SampleRNG`): sample i's noise depends only on (seed, i), so
  :meth:`~GenerativeFamily.sample_many` gives the same samples for any batch size, device count or rank;
  ``predict_step`` answers sample requests, so Lightning's predict loop draws on many devices.
- One label policy: conditional families draw the balanced labels ``i % num_classes`` of the samples' global
  indices unless labels are given (range-checked); unconditional ones refuse labels. One conditional-data
  check, one EMA policy (decay warmed up, updated after each optimizer step of the averaged net).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genlit.families.ema import make_ema
from genlit.families.lora import LoraAdapters, LoraOptions
from genlit.families.training import NonFiniteLossError, NonFinitePolicy, TrainingModule
from genlit.families.transfer import EMA_PREFIX
from genlit.seeding import SampleRNG

__all__ = ["GenerativeFamily", "NonFiniteLossError", "NonFinitePolicy", "ShapeNetFactory", "TrainingModule"]

ShapeNetFactory = Callable[[tuple[int, ...], int], nn.Module]
"""A net class (or any callable) taking ``(data_shape, num_classes)``; YAML gives its other init_args."""

SAMPLE_QUALITY_PANELS: Mapping[str, tuple[str, ...]] = {
    "FID (lower is better)": ("fid",),  # genlit.callbacks.sample_quality.SampleQualityMonitor
    "precision and recall": ("precision", "recall"),
    "modes covered (toy data)": ("modes_covered",),  # genlit.callbacks.toy_metrics.ToyModeMetrics
    "high-quality samples (share, toy data)": ("high_quality_fraction",),
}
"""The panels of the sample-quality metrics the callbacks log for any generative family (drawn where measured)."""


class GenerativeFamily(TrainingModule):
    """Base of every generative family (see the module docstring for the contract).

    Subclasses implement :meth:`draw` and, where they keep an EMA of a network, call :meth:`keep_ema` once in
    ``__init__`` (after building that network). Families with manual optimization call :meth:`update_ema`
    after each optimizer step of the averaged network; with automatic optimization it happens here.

    Args:
        num_classes: number of classes of the data (linked from the DataModule by the CLI).
        conditional: class-conditional model; needs labelled data (``num_classes`` >= 1).
        optimizer / lr_scheduler: factories (see :class:`TrainingModule`).
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run or ``skip`` the step.
    """

    metric_panels = {"loss": ("loss",), **SAMPLE_QUALITY_PANELS}

    def __init__(
        self,
        num_classes: int = 0,
        conditional: bool = False,
        optimizer: Callable | None = None,
        lr_scheduler: Callable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, on_nonfinite)
        if conditional and num_classes < 1:
            raise ValueError(
                f"conditional=True needs labelled data, but the DataModule reports 0 classes; "
                f"set --data.label_column (and --data.num_classes) or use conditional=false ({type(self).__name__})"
            )
        self.num_classes, self.conditional = num_classes, conditional
        self.ema: nn.Module | None = None
        self._ema_of: str | None = None
        self._ema_in_use = False
        self.predict_options: dict[str, Any] = {}  # sample() options of predict_step (use_ema, a sampler, ...)

    # ------------------------------------------------------------------------------------------------ EMA
    def keep_ema(self, name: str, decay: float) -> None:
        """Keep an exponential moving average of the sub-module ``name`` (none when ``decay`` is 0), with the
        decay warmed up as min(decay, (1 + n) / (10 + n)) after n updates (:func:`~genlit.families.ema.make_ema`),
        so short runs are not dominated by the initial weights."""
        self.ema = make_ema(getattr(self, name), decay, warmup=True)
        self._ema_of = name

    def weight_copies(self) -> dict[str, str]:
        """The EMA copy mirrors the averaged network: ``{"generator.": "ema.module."}`` (LoRA adapts both alike)."""
        return {f"{self._ema_of}.": f"{EMA_PREFIX}module."} if self.ema is not None else {}

    def add_lora(self, options: LoraOptions) -> LoraAdapters:
        """The base's, then the EMA copy's adapters restarted from the live ones (the EMA's B matrices too)."""
        adapters = super().add_lora(options)
        self.restart_ema()
        return adapters

    def update_ema(self) -> None:
        """Fold the averaged network's current weights into its EMA (after each of its optimizer steps)."""
        if self.ema is not None:
            self.ema.update_parameters(getattr(self, self._ema_of))

    def restart_ema(self) -> None:
        """Restart the EMA from the averaged network's current weights, its update count at 0 (after ``init_from``
        loaded them: the average must not keep what it held before)."""
        if self.ema is None:
            return
        with torch.no_grad():
            for average, live in zip(_state_tensors(self.ema.module), _state_tensors(getattr(self, self._ema_of)),
                                     strict=True):  # fmt: skip
                average.copy_(live)
            self.ema.n_averaged.zero_()

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step the optimizer, then the EMA (once per real step, also with gradient accumulation)."""
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    @contextmanager
    def ema_weights(self, use_ema: bool = True) -> Iterator[None]:
        """Within the block the averaged network holds its EMA weights (and buffers), when ``use_ema`` and the
        family keeps an EMA; its trained weights are restored afterwards. The one place that chooses."""
        if not use_ema or self.ema is None or self._ema_in_use:
            yield
            return
        live = _state_tensors(getattr(self, self._ema_of))
        with torch.no_grad():
            trained = [t.detach().clone() for t in live]
            for target, average in zip(live, _state_tensors(self.ema.module), strict=True):
                target.copy_(average)
        self._ema_in_use = True
        try:
            yield
        finally:
            self._ema_in_use = False
            with torch.no_grad():
                for target, saved in zip(live, trained, strict=True):
                    target.copy_(saved)

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Every sub-module in eval mode within the block; each one's own mode restored afterwards."""
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        labels: Tensor | Sequence[int] | None = None,
        generator: torch.Generator | SampleRNG | None = None,
        use_ema: bool = True,
        **options: Any,
    ):
        """Draw ``num`` samples (a tensor (num, ...) in data space, or the family's own kind, e.g. texts).

        Args:
            num: how many.
            labels: (num,) class labels of a conditional model; default: balanced, ``index % num_classes``.
            generator: a :class:`~genlit.seeding.SampleRNG` (per-sample streams with global indices), a
                ``torch.Generator`` (it picks the seed; indices 0..num-1) or None (torch's global generator).
            use_ema: the EMA weights where the family keeps them; False: the trained weights.
            options: the family's sampling options, the keyword-only parameters of :meth:`draw`.
        """
        if num < 0:
            raise ValueError(f"the number of samples must be >= 0, got {num}")
        self.check_sample_options(**options)
        rng = SampleRNG.for_call(num, generator, self.device)
        labels = self.sample_labels(rng.indices, labels)
        with self.eval_mode(), self.ema_weights(use_ema):
            return self.draw(num, labels, rng, **options)

    def sample_many(
        self,
        indices: Sequence[int],
        *,
        seed: int,
        batch_size: int = 500,
        labels: Tensor | Sequence[int] | None = None,
        use_ema: bool = True,
        progress: bool = False,
        **options: Any,
    ):
        """The samples with global ``indices`` under ``seed``, ``batch_size`` at a time: sample i depends only
        on (seed, i), so any batch size, or any split of the indices across ranks, gives the same samples.
        ``labels`` as for :meth:`sample` (one per index); ``progress`` shows a bar over the samples."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = list(indices)
        labels = self.sample_labels(torch.as_tensor(indices, dtype=torch.long), labels)
        parts = []
        with tqdm(total=len(indices), desc="sampling", unit="sample", disable=not progress) as bar:
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                rng = SampleRNG(chunk, seed, self.device)
                chunk_labels = None if labels is None else labels[start : start + len(chunk)]
                parts.append(self.sample(len(chunk), labels=chunk_labels, generator=rng, use_ema=use_ema, **options))
                bar.update(len(chunk))
        if parts and isinstance(parts[0], Tensor):
            return torch.cat(parts)
        return [item for part in parts for item in part]

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict:
        """Answer a sample request of :class:`genlit.data.requests.SampleRequests` (``indices``, ``seed``,
        optional ``labels``): ``{"indices", "samples", "labels"}``, so that Lightning's predict loop draws samples
        on any number of devices (the writer: :class:`genlit.callbacks.sample_writer.SampleWriter`)."""
        if not is_sample_request(batch):
            raise ValueError(
                f"{type(self).__name__}.predict_step draws samples for sample requests; use "
                "--data genlit.data.requests.SampleRequests (or genlit sample)"
            )
        indices = batch["indices"].cpu()
        rng = SampleRNG(indices, int(batch["seed"]), self.device)
        labels = self.sample_labels(indices, batch.get("labels"))
        samples = self.sample(len(indices), labels=labels, generator=rng, **self.predict_options)
        return {"indices": indices, "samples": samples, "labels": None if labels is None else labels.cpu()}

    def sample_labels(self, indices: Tensor, labels: Tensor | Sequence[int] | None = None) -> Tensor | None:
        """The labels (N,) of samples with global ``indices`` (N,): as given (checked), balanced
        ``indices % num_classes`` by default, or None for an unconditional model (which refuses labels)."""
        name = type(self).__name__
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"this {name} is unconditional; sample it without labels")
            return None
        if labels is None:
            return (indices % self.num_classes).to(self.device)
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        num = len(indices)
        if labels.shape != (num,) or (num and (labels.min() < 0 or labels.max() >= self.num_classes)):
            raise ValueError(
                f"labels must be {num} integers in [0, {self.num_classes}); got shape {tuple(labels.shape)}"
                + (f" with values {labels.min().item()}..{labels.max().item()}" if labels.numel() else "")
            )
        return labels

    @classmethod
    def sample_options(cls) -> dict[str, inspect.Parameter]:
        """The family's sampling options: the keyword-only parameters of :meth:`draw`, by name."""
        parameters = inspect.signature(cls.draw).parameters.values()
        return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_sample_options(self, **options: Any) -> None:
        """One clear error for an option the family does not have, or a value it cannot take."""
        allowed = self.sample_options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            known = ", ".join(allowed) or "none"
            raise ValueError(f"{type(self).__name__} has no sampling option {', '.join(unknown)}; its options: {known}")
        self.validate_sample_options(**options)

    def validate_sample_options(self, **options: Any) -> None:
        """Check the values of sampling options (families override it; the names are already checked)."""

    def draw(self, num: int, labels: Tensor | None, rng: SampleRNG, **options: Any):
        """Draw ``num`` samples with ``labels`` (N,) or None and noise from ``rng``; called by :meth:`sample`
        in eval mode, without gradients and with the EMA weights in place. Options are keyword-only."""
        raise NotImplementedError(f"{type(self).__name__} does not implement draw()")


def is_sample_request(batch) -> bool:
    """Whether a predict batch is a sample request (a dict with ``indices`` and ``seed``)."""
    return isinstance(batch, dict) and "indices" in batch and "seed" in batch


def _state_tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]
