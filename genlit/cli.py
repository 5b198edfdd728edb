"""The ``genlit`` command: LightningCLI (fit/validate/test/predict) plus ``genlit sample`` and ``genlit evaluate``
(:mod:`genlit.commands`).

Each run gets its own directory ``<trainer.default_root_dir>/<YYYYmmdd-HHMMSS>/`` holding the saved
``config.yaml`` (which reproduces the run), ``checkpoints/``, ``samples/`` and the logger's files.
"""

from __future__ import annotations

import os
import sys
import time
from copy import deepcopy
from pathlib import Path

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.cli import LightningCLI

from genlit.callbacks.progress import ThrottledProgressBar
from genlit.commands.errors import USER_ERRORS, UsageError, error_line

EXTRA_COMMANDS = {"sample": "genlit.commands.sample:main", "evaluate": "genlit.commands.evaluate:main"}
LOGGERS_WITH_SUBDIRS = ("TensorBoardLogger", "CSVLogger")
DEBUG_ENV = "GENLIT_DEBUG"


class GenlitCLI(LightningCLI):
    """LightningCLI with data-to-model argument links and one directory per run.

    Links (applied when the DataModule is instantiated): ``data.data_shape -> model.data_shape``,
    ``data.num_classes -> model.num_classes``, ``data.vocab_size -> model.vocab_size`` and
    ``data.block_size -> model.block_size``, so image size, channels, classes, vocabulary and context live in
    one place. A link whose DataModule lacks the attribute is skipped.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "epilog": "Extra command: genlit sample --ckpt PATH --num N --out FILE.npz",
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

    def before_instantiate_classes(self) -> None:
        """Point the loggers and checkpoints of this run at its own directory; W&B offline by default; the
        progress bar is :class:`~genlit.callbacks.progress.ThrottledProgressBar` unless the config names one."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._config_as_given = deepcopy(config)
        names_a_bar = any(c.class_path.endswith("ProgressBar") for c in _as_list(config.trainer.callbacks))
        if config.trainer.enable_progress_bar is not False and not names_a_bar and _RICH_AVAILABLE:
            self.trainer_defaults = {**self.trainer_defaults, "callbacks": [ThrottledProgressBar()]}
        run_dir = _run_dir(config.trainer.default_root_dir)
        config.trainer.default_root_dir = str(run_dir)
        for logger in _as_list(config.trainer.logger):
            _place_logger(logger, run_dir)
        for callback in _as_list(config.trainer.callbacks):
            if callback.class_path.endswith("ModelCheckpoint") and callback.init_args.dirpath is None:
                callback.init_args.dirpath = str(run_dir / "checkpoints")

    def instantiate_trainer(self, **kwargs):
        """Save the config as the user gave it (not with this run's directories), so re-running it makes
        a new run instead of overwriting this one."""
        if not self.subcommand:
            return super().instantiate_trainer(**kwargs)
        placed = self.config[self.subcommand]
        self.config[self.subcommand] = self._config_as_given
        try:
            return super().instantiate_trainer(**kwargs)
        finally:
            self.config[self.subcommand] = placed


def _run_dir(root: str | None) -> Path:
    """A fresh run directory, the same on every DDP rank.

    Lightning's DDP launcher re-runs the command for ranks > 0 with ``LOCAL_RANK`` set; they inherit the
    directory chosen by rank 0 through ``GENLIT_RUN_DIR``.
    """
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("GENLIT_RUN_DIR"):
        return Path(os.environ["GENLIT_RUN_DIR"])
    base = Path(root or "runs").absolute()
    run_dir = base / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    os.environ["GENLIT_RUN_DIR"] = str(run_dir)
    return run_dir


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
    elif name in LOGGERS_WITH_SUBDIRS:
        args.save_dir, args.name, args.version = str(run_dir), "", ""


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
