"""The family contract: what every genlit LightningModule shares, written once.

:class:`TrainingModule` holds the optimizer/scheduler plumbing and the cheap per-step logging of every module
genlit trains (the generative families and the evaluation classifier). :class:`GenerativeFamily` adds what
commands, callbacks and notebooks rely on without asking which family a module is:

- ``sample(num, *, labels=None, generator=None, use_ema=True, **options)`` runs in eval mode without
  gradients, restores every sub-module's mode afterwards, and uses the EMA weights where the family keeps
  them. ``options`` are the keyword-only parameters of the family's :meth:`~GenerativeFamily.draw`
  (:meth:`~GenerativeFamily.sample_options`); the commands build their flags from them.
- Per-sample seeding (:class:`genlit.seeding.SampleRNG`): sample i's noise depends only on (seed, i), so
  :meth:`~GenerativeFamily.sample_many` gives the same samples for any batch size, device count or rank;
  ``predict_step`` answers sample requests, so Lightning's predict loop draws on many devices.
- Fault tolerance for every module genlit trains (:class:`TrainingModule`): a non-finite loss stops the run or
  skips the step, non-finite weights are never checkpointed, and a checkpoint carries what an exact resume
  needs beyond Lightning's own state (random generators, running means).
- One label policy: conditional families draw the balanced labels ``i % num_classes`` of the samples' global
  indices unless labels are given (range-checked); unconditional ones refuse labels. One conditional-data
  check, one EMA policy (decay warmed up, updated after each optimizer step of the averaged net).
- Fine-tuning for every module genlit trains (:mod:`genlit.families.transfer`): the options ``init_from``,
  ``init_strict``, ``init_key_map``, ``freeze`` and ``lora`` (:mod:`genlit.families.lora`) without any family
  naming them; a family names only its default LoRA targets (:attr:`TrainingModule.lora_targets`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric
from tqdm.auto import tqdm

from genlit.checkpoints import allow_objects_of
from genlit.families.ema import make_ema
from genlit.families.lora import LoraAdapters, LoraOptions, add_adapters, merge_adapters
from genlit.families.step_logging import StepLogger
from genlit.families.transfer import (
    EMA_PREFIX,
    TakesTransferOptions,
    TransferOptions,
    freeze_parameters,
    initialize_from,
    lora_summary,
    say,
    signatures_as_written,
)
from genlit.optim import optimizer_config
from genlit.seeding import SampleRNG, rng_states, set_rng_states

ShapeNetFactory = Callable[[tuple[int, ...], int], nn.Module]
"""A net class (or any callable) taking ``(data_shape, num_classes)``; YAML gives its other init_args."""

NonFinitePolicy = Literal["stop", "skip"]
RESUME_KEY = "genlit_resume"
SAMPLE_QUALITY_PANELS: Mapping[str, tuple[str, ...]] = {
    "FID (lower is better)": ("fid",),  # genlit.callbacks.sample_quality.SampleQualityMonitor
    "precision and recall": ("precision", "recall"),
    "modes covered (toy data)": ("modes_covered",),  # genlit.callbacks.toy_metrics.ToyModeMetrics
    "high-quality samples (share, toy data)": ("high_quality_fraction",),
}
"""The panels of the sample-quality metrics the callbacks log for any generative family (drawn where measured)."""


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or infinite loss (or weights) and stopped before applying it."""


class TrainingModule(L.LightningModule, metaclass=TakesTransferOptions):
    """Base of every module genlit trains: one optimizer (and optional LR scheduler) from factories, and
    per-step training metrics logged cheaply (:class:`~genlit.families.step_logging.StepLogger`) with their
    epoch means at each epoch's end; fine-tuning options taken by every subclass (``init_from``, ``freeze``, ...:
    :mod:`genlit.families.transfer`), applied in :meth:`setup` and :meth:`on_fit_start`.

    Subclasses set ``progress_bar_metrics`` (train metrics shown in the bar), ``metric_panels`` (the groups of
    metrics drawn in a run's ``metrics.png`` and by ``genlit plot``: panel title -> metric names without their
    stage, each drawn as its ``train/`` curve and ``val/`` points), ``scheduler_interval``
    (``"step"`` or ``"epoch"``) and, when not every trainable parameter is optimized the same way,
    :meth:`optimized_parameters`; ``lora_targets`` and ``lora_trains``, the default ``target`` and ``train``
    patterns of the ``lora`` option (:mod:`genlit.families.lora`). Before a loss is applied they ask
    :meth:`loss_is_finite`: a NaN or infinite loss stops the run (``on_nonfinite="stop"``) or skips the step
    (``"skip"``, counted as ``train/nonfinite_skips``), and a checkpoint is never written with non-finite weights.
    """

    progress_bar_metrics: tuple[str, ...] = ("loss",)
    metric_panels: ClassVar[Mapping[str, tuple[str, ...]]] = {"loss": ("loss",)}
    scheduler_interval: Literal["step", "epoch"] = "step"
    transfer_options: TransferOptions = TransferOptions()  # set per module by the metaclass
    lora_targets: ClassVar[tuple[str, ...]] = ()  # the layers LoRA adapts by default (none: lora.target is required)
    lora_trains: ClassVar[tuple[str, ...]] = ()  # the parameters that keep training beside the adapters by default
    lora_adapters: LoraAdapters | None = None  # set by the metaclass when the module has LoRA adapters

    def __init__(
        self,
        optimizer: Callable | None = None,
        lr_scheduler: Callable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        # Kept as given: under LightningCLI, hparams hold their configs (class_path/init_args), not callables.
        self._factories = (optimizer or torch.optim.Adam, lr_scheduler)
        self._step_logger = StepLogger(self, "train", prog_bar=self.progress_bar_metrics)
        self.on_nonfinite = on_nonfinite
        self.register_buffer("_nonfinite_skips", torch.zeros((), dtype=torch.long))
        self._rng_to_restore: dict | None = None  # set by on_load_checkpoint, used by on_train_start
        self._fit_started = False  # init_from is loaded by the first fit only

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger: bool = True) -> None:
        """Lightning's, reading each ``__init__``'s arguments by the names it was written with (the transfer
        options its signature shows are not among its local variables)."""
        frame = frame or inspect.currentframe().f_back
        with signatures_as_written(type(self)):
            super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)

    def setup(self, stage: str) -> None:
        """Let this module's own checkpoints load with ``weights_only=True`` (the net factories, schedules and
        optimizer classes of a module built in Python; :func:`genlit.checkpoints.allow_objects_of`); when fitting,
        freeze the parameters ``freeze`` names, before the optimizers are built (a resumed run too)."""
        allow_objects_of(dict(self.hparams))
        if stage == "fit":
            freeze_parameters(self, self.transfer_options.freeze)
            if self.lora_adapters is not None:
                say(lora_summary(self, self.lora_adapters))

    def on_fit_start(self) -> None:
        """Load ``init_from`` into a new run (not a resumed one: Lightning restored its checkpoint just before and
        set ``trainer.ckpt_path``; not a second fit of this module either)."""
        if not self._fit_started and self.trainer.ckpt_path is None:
            initialize_from(self, self.transfer_options)
        self._fit_started = True

    def add_lora(self, options: LoraOptions) -> LoraAdapters:
        """Inject the LoRA adapters of ``options`` (with this family's default targets) and freeze all but them and
        ``lora.train``'s parameters; called once, by the metaclass, right after ``__init__``."""
        return add_adapters(self, options, (self.lora_targets, self.lora_trains), self.weight_copies())

    def weight_copies(self) -> dict[str, str]:
        """Name prefixes of sub-modules that a copy in this module mirrors, to the copy's prefix (none here)."""
        return {}

    def merge_lora(self) -> LoraOptions | None:
        """Merge the LoRA adapters into the weights they adapt and unload them (a plain module with the plain
        names, as ``genlit export`` writes it); the options they had, or None without adapters."""
        if self.lora_adapters is None:
            return None
        merge_adapters(self.lora_adapters)
        options, self.lora_adapters = self.lora_adapters.options, None
        return options

    def log_train_step(self, **values: Tensor) -> None:
        """Record this training step's scalar metrics as ``train/<name>`` (and their epoch means)."""
        self._step_logger.record(**values)

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training metrics as ``train/<name>_epoch``."""
        self._step_logger.log_epoch_means()

    def loss_is_finite(self, loss: Tensor, *, everywhere: bool | None = None, **terms: Tensor) -> bool:
        """Whether to apply ``loss``: True when it is finite (on every rank). Otherwise the run stops with one
        line naming the step and the non-finite ``terms`` (``on_nonfinite="stop"``), or this step is skipped on
        every rank and counted (``"skip"``): False. ``everywhere``: the decision, when the caller already
        combined the ranks' flags (:func:`genlit.optim.synchronize_step`); else one collective here."""
        finite = everywhere
        if finite is None:
            finite = bool(torch.isfinite(loss.detach()).all())
            if self._trainer is not None:
                finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return True
        values = {"loss": loss, **terms}
        bad = ", ".join(f"{k}={v.detach().float().mean().item():.4g}" for k, v in values.items()
                        if not torch.isfinite(v.detach()).all()) or "on another rank"  # fmt: skip
        where = f"step {self.global_step}: non-finite training loss ({bad})"
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{where}; the run stops before applying it (the checkpoints hold the last finite weights). "
                "Lower the learning rate or use --model.on_nonfinite skip"
            )
        self._nonfinite_skips += 1
        self.log("train/nonfinite_skips", self._nonfinite_skips.float(), on_step=True, on_epoch=False)
        rank_zero_warn(f"{where}; step skipped ({int(self._nonfinite_skips)} so far)")
        return False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to checkpoint non-finite weights (the previous checkpoint stays); store what an exact resume
        needs beyond Lightning's state: the random generators' states and the epoch's running means."""
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise NonFiniteLossError(
                f"step {self.global_step}: the weights are no longer finite; the checkpoint is not written "
                "(the previous one stays). Lower the learning rate or use --model.on_nonfinite skip"
            )
        checkpoint[RESUME_KEY] = {
            "rng": rng_states(),
            "step_logger": self._step_logger.state_dict(),
            "train_metrics": {name: (m.metric_state, m._update_count) for name, m in self._train_metrics()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take back the running means now and the random states when training restarts."""
        state = checkpoint.get(RESUME_KEY)
        if state:
            self._step_logger.load_state_dict(state["step_logger"])
            for name, metric in self._train_metrics():
                if name in state["train_metrics"]:
                    values, updates = state["train_metrics"][name]
                    for key, value in values.items():
                        setattr(metric, key, value)
                    metric._update_count = updates
            self._rng_to_restore = state["rng"]

    def _train_metrics(self) -> list[tuple[str, Metric]]:
        """The torchmetrics that accumulate over a training epoch (attributes named ``train_*``): their states
        are not in the state dict, so a resume in the middle of an epoch carries them here."""
        return [(name, m) for name, m in self.named_children() if isinstance(m, Metric) and name.startswith("train")]

    def on_train_start(self) -> None:
        """On a resumed run, restore the random generators where the checkpoint left them, after the sanity
        check and before the first batch is fetched and augmented (so its noise, dropout and augmentation match
        the uninterrupted run's). Lightning calls this hook on every start, mid-epoch ones included."""
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def optimized_parameters(self) -> Any:
        """What the optimizer factory is given: every trainable parameter (or param groups)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        """The optimizer and, when given, its scheduler stepped every ``scheduler_interval``."""
        optimizer_factory, scheduler_factory = self._factories
        optimizer = optimizer_factory(self.optimized_parameters())
        return optimizer_config(optimizer, scheduler_factory, self.scheduler_interval)


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
