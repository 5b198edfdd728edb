"""The ``genlit`` command: LightningCLI (fit/validate/test/predict) plus ``genlit sample``, ``genlit evaluate``,
``genlit plot``, ``genlit translate``, ``genlit encode`` and ``genlit export`` (:mod:`genlit.commands`).

Each run gets its own directory ``<trainer.default_root_dir>/<YYYYmmdd-HHMMSS>/`` holding the saved
``config.yaml`` (which reproduces the run), ``checkpoints/``, ``samples/``, the logger's files and, from
``genlit fit`` whatever its loggers, the metrics record ``metrics.csv`` (:mod:`genlit.commands.record`) and its
curves ``metrics.png``, drawn when fit ends (:mod:`genlit.commands.plot`); a resumed run (``--ckpt_path last``,
``--ckpt_path PATH``, ``--run_dir DIR``) continues in its own folder (:mod:`genlit.commands.runs`) and record.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from copy import deepcopy
from pathlib import Path

import lightning as L
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger

from genlit.callbacks.checkpoints import AtomicCheckpointIO
from genlit.callbacks.progress import default_progress_bar
from genlit.checkpoints import allowed_objects
from genlit.commands.errors import USER_ERRORS, UsageError, error_line
from genlit.commands.record import MetricsRecord
from genlit.commands.runs import new_run_dir, resolve_run

EXTRA_COMMANDS = {"sample": "genlit.commands.sample:main", "evaluate": "genlit.commands.evaluate:main",
                  "plot": "genlit.commands.plot:main", "translate": "genlit.commands.translate:main",
                  "encode": "genlit.commands.encode:main", "export": "genlit.commands.export:main"}  # fmt: skip
LOGGERS_WITH_SUBDIRS = ("TensorBoardLogger", "CSVLogger")
DEBUG_ENV = "GENLIT_DEBUG"


class GenlitCLI(LightningCLI):
    """LightningCLI with data-to-model argument links and one directory per run.

    Links (applied when the DataModule is instantiated): ``data.data_shape -> model.data_shape``,
    ``data.num_classes -> model.num_classes``, ``data.vocab_size -> model.vocab_size`` and
    ``data.block_size -> model.block_size`` (and an unpaired DataModule's ``shape_a``/``shape_b``), so image
    size, channels, classes, vocabulary and context live in one place. A link whose DataModule lacks the
    attribute is skipped.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, callbacks: list[L.Callback] = ()) -> None:
        self._extra_callbacks = list(callbacks)  # objects from Python (genlit.fit), added to the configured ones
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=KeepRunConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "epilog": "Extra commands: genlit sample --ckpt PATH --num N --out FILE.npz; genlit evaluate; "
                "genlit plot RUN_DIR [RUN_DIR ...]; genlit translate --ckpt PATH --input X.npz --direction AB "
                "--out Y.npz; genlit encode --ckpt VQVAE.ckpt --split train --out CODES.npz; genlit export --ckpt PATH "
                "--out DIR",
                "exit_on_error": False,  # parse errors reach main(), which prints them on one line
            },
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        """Carry the data's shape, class count, vocabulary size and context length into the model."""
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.init_args.block_size", apply_on="instantiate")
        parser.link_arguments("data.shape_a", "model.init_args.shape_a", apply_on="instantiate")  # unpaired domains
        parser.link_arguments("data.shape_b", "model.init_args.shape_b", apply_on="instantiate")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="the run folder to create or continue (default: a new one under "
                                 "trainer.default_root_dir, or the one --ckpt_path belongs to)")  # fmt: skip

    def before_instantiate_classes(self) -> None:
        """Point the loggers and checkpoints of this run at its own directory; W&B offline by default; the
        progress bar is :func:`~genlit.callbacks.progress.default_progress_bar` unless the config names one."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._config_as_given = deepcopy(config)
        for key in ("run_dir", "ckpt_path", "weights_only"):  # where and how this launch ran, not the run itself
            if key in self._config_as_given:
                self._config_as_given[key] = None
        names_a_bar = any(c.class_path.endswith("ProgressBar") for c in _as_list(config.trainer.callbacks))
        extra = list(self._extra_callbacks)
        if config.trainer.enable_progress_bar is not False and not names_a_bar and _RICH_AVAILABLE:
            extra.append(default_progress_bar())
        if extra:
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": extra}
        run_dir = getattr(self, "_run_dir", None) or new_run_dir(Path(config.trainer.default_root_dir or "runs"))
        config.trainer.default_root_dir = str(run_dir)
        for logger in _as_list(config.trainer.logger):
            _place_logger(logger, run_dir)
        for callback in _as_list(config.trainer.callbacks):
            if _is_model_checkpoint(callback.class_path) and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(run_dir / "checkpoints")

    def _parse_ckpt_path(self) -> None:
        """Resolve this launch's run folder and the checkpoint it continues (``--ckpt_path last`` becomes the
        newest run's newest checkpoint; :func:`genlit.commands.runs.resolve_run`). The checkpoint is loaded
        with ``weights_only=True`` (unless the user says ``--weights_only false``) and refused in one line if it
        names objects genlit never writes (:mod:`genlit.checkpoints`): it cannot run code. Then LightningCLI
        reads its hparams."""
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            root = config.trainer.default_root_dir
            self._run_dir, config.ckpt_path = resolve_run(root, config.get("run_dir"), config.get("ckpt_path"))
            if config.get("weights_only") is None:
                config.weights_only = True
            if config.weights_only and config.ckpt_path and Path(config.ckpt_path).is_file():
                torch.serialization.add_safe_globals(allowed_objects(config.ckpt_path))
            given = deepcopy(config.model)
        super()._parse_ckpt_path()
        if subcommand:
            self._keep_command_line_model_args(self.config[subcommand].model, given)

    def parse_arguments(self, parser, args) -> None:
        """Parse as LightningCLI does, remembering the arguments (for :meth:`_keep_command_line_model_args`)."""
        self._argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        super().parse_arguments(parser, args)

    def _keep_command_line_model_args(self, model, given) -> None:
        """``--model.X`` on the command line beats the checkpoint's hyperparameters, which LightningCLI otherwise
        lets win over everything (``genlit test --ckpt_path C --model.iw_samples 8`` would silently test with the
        checkpoint's value; Lightning-AI/pytorch-lightning#21455 proposes the same order upstream)."""
        for arg in getattr(self, "_argv", []):
            name = arg.split("=", 1)[0]
            if not name.startswith("--model.") or name in ("--model.class_path", "--model.init_args"):
                continue
            key = name.removeprefix("--model.").removeprefix("init_args.")
            for source in (f"init_args.{key}", key):
                if source in given and key.split(".")[0] in (model.get("init_args") or {}):
                    model[f"init_args.{key}"] = given[source]
                    break

    def instantiate_trainer(self, **kwargs):
        """Save the config as the user gave it (not with this run's directories), so re-running it makes
        a new run instead of overwriting this one. ``fit`` also writes the run's metrics record."""
        if not self.subcommand:
            return super().instantiate_trainer(**kwargs)
        if not self.config_init[self.subcommand].trainer.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        placed = self.config[self.subcommand]
        self.config[self.subcommand] = self._config_as_given
        try:
            trainer = super().instantiate_trainer(**kwargs)
        finally:
            self.config[self.subcommand] = placed
        if self.subcommand == "fit":
            record = MetricsRecord(placed.trainer.default_root_dir, resuming=bool(placed.ckpt_path))
            trainer.loggers = with_record(trainer.loggers, record)
        return trainer

    def after_fit(self) -> None:
        """Draw the run's training curves into ``metrics.png`` (global rank zero; :mod:`genlit.commands.plot`)."""
        if self.trainer.is_global_zero:
            from genlit.commands.plot import write_run_figure  # pandas and the figures: only once a fit has ended

            write_run_figure(self.trainer.default_root_dir)


class KeepRunConfig(SaveConfigCallback):
    """Save ``config.yaml`` into the run folder when a run starts; a resumed run keeps the one it started with."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Write the config, unless this launch continues a run that already has one."""
        if trainer.ckpt_path and (Path(trainer.log_dir or trainer.default_root_dir) / self.config_filename).exists():
            return
        super().setup(trainer, pl_module, stage)


def with_record(loggers: list[Logger], record: MetricsRecord) -> list[Logger]:
    """The loggers with the run's metrics record: in place of a ``CSVLogger`` that would write the same file (the
    record continues on a resume, which Lightning's does not), else added after them."""
    for i, logger in enumerate(loggers):
        if isinstance(logger, CSVLogger) and Path(logger.log_dir).absolute() == Path(record.log_dir).absolute():
            return [*loggers[:i], record, *loggers[i + 1 :]]
    return [*loggers, record]


def _is_model_checkpoint(class_path: str) -> bool:
    module_name, _, name = class_path.rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module_name), name), ModelCheckpoint)
    except (ImportError, AttributeError, TypeError):
        return False


def _as_list(value) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _place_logger(logger, run_dir: Path) -> None:
    """Write the logger's files into ``run_dir``; W&B stays offline unless WANDB_MODE=online."""
    name = logger.class_path.rsplit(".", 1)[-1]
    args = logger.init_args
    if name == "WandbLogger":
        args.save_dir = str(run_dir)
        if os.environ.get("WANDB_MODE") == "online":
            args.offline = False
        if args.get("id") is None:  # one W&B run per run folder: a resumed run continues it
            args.id = wandb_run_id(run_dir)
            logger.dict_kwargs = {**(logger.get("dict_kwargs") or {}), "resume": "allow"}
    elif name in LOGGERS_WITH_SUBDIRS:
        args.save_dir, args.name, args.version = str(run_dir), "", ""


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of a run folder: its name and a hash of its path (W&B ids take letters, digits, - and _)."""
    digest = hashlib.sha1(str(run_dir.absolute()).encode()).hexdigest()[:8]
    return re.sub(r"[^\w-]", "_", f"{run_dir.name}-{digest}")


def _run_extra(command: str, argv: list[str]) -> None:
    module_name, func_name = EXTRA_COMMANDS[command].split(":")
    module = __import__(module_name, fromlist=[func_name])
    getattr(module, func_name)(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``genlit`` console script (``argv`` defaults to the command line)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in EXTRA_COMMANDS:
            _run_extra(args[0], args[1:])
        else:
            GenlitCLI(args=None if argv is None else args)
    except (*USER_ERRORS, ArgumentError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        hint = "" if isinstance(err, (ArgumentError, UsageError)) else f"  (set {DEBUG_ENV}=1 for the traceback)"
        print(f"genlit: error: {error_line(err)}{hint}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _finish_wandb()


def _finish_wandb() -> None:
    """End the W&B run of this command, so the next run in the same process (notebook, tests) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


if __name__ == "__main__":
    main()
