"""The base of every module genlit trains (the generative families and the evaluation classifier).

:class:`TrainingModule` holds the optimizer/scheduler plumbing, the cheap per-step logging, fault tolerance (a
non-finite loss stops the run or skips the step, non-finite weights are never checkpointed, and a checkpoint carries
what an exact resume needs beyond Lightning's own state: random generators, running means) and fine-tuning
(:mod:`genlit.families.transfer`: ``init_from``, ``init_strict``, ``init_key_map``, ``freeze`` and ``lora``,
:mod:`genlit.families.lora`, without any family naming them; a family names only its default LoRA targets,
:attr:`TrainingModule.lora_targets`). :class:`~genlit.families.base.GenerativeFamily` builds the family contract on
it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from genlit.checkpoints import allow_objects_of
from genlit.families.lora import LoraAdapters, LoraOptions, add_adapters, merge_adapters
from genlit.families.step_logging import StepLogger
from genlit.families.transfer import (
    TakesTransferOptions,
    TransferOptions,
    freeze_parameters,
    initialize_from,
    lora_summary,
    say,
    signatures_as_written,
)
from genlit.optim import optimizer_config
from genlit.seeding import rng_states, set_rng_states

NonFinitePolicy = Literal["stop", "skip"]
RESUME_KEY = "genlit_resume"


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
