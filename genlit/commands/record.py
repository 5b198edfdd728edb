"""The metrics record of a run folder, ``<run>/metrics.csv``: what ``genlit fit`` logged, whatever loggers the run
has, readable without W&B, an account or a network (for ``metrics.png`` and ``genlit plot``).

The format is Lightning's ``CSVLogger``'s: one row per logging call, with ``step`` (the step Lightning gives the
loggers: training batches that stepped), ``epoch`` and a column per metric key, empty where the row has no value.
:class:`MetricsRecord` writes it, a ``CSVLogger`` that

- writes into the run folder itself (not ``lightning_logs/version_<n>/``), and no ``hparams.yaml``: the run's
  ``config.yaml`` is the record of its settings;
- continues the record when the launch resumes the run (``--ckpt_path``, a requeued job): what the interrupted
  launch logged at or after the first step the resumed launch logs is replaced, so each step appears once and the
  steps go on; a launch that trains afresh in an existing folder starts a new record;
- writes every logging call as it comes (a killed run keeps what it had logged) and, when new keys add columns,
  rewrites the file beside itself and moves it into place (:func:`genlit.files.atomic_write`).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from genlit.files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

RECORD_FILE = "metrics.csv"
STAGES = ("train", "val", "test")


class MetricsRecord(CSVLogger):
    """The logger that writes a run folder's ``metrics.csv`` (the module docstring says how).

    ``genlit fit`` adds it beside the configured loggers (also with ``--trainer.logger false``), or in place of a
    configured ``CSVLogger`` that would write the same file.

    Args:
        run_dir: the run folder.
        resuming: this launch continues the run from a checkpoint: continue its record.
    """

    def __init__(self, run_dir: str | os.PathLike, resuming: bool = False) -> None:
        super().__init__(save_dir=run_dir, name="", version="", flush_logs_every_n_steps=1)
        self.resuming = resuming

    @property
    @rank_zero_experiment
    def experiment(self) -> RecordWriter:
        """The writer of ``metrics.csv`` (global rank zero only)."""
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = RecordWriter(self.log_dir, self.resuming)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Any = None) -> None:
        """Nothing: the run's ``config.yaml`` holds its settings."""


class RecordWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing ``metrics.csv`` when ``resuming`` instead of deleting it."""

    def __init__(self, log_dir: str, resuming: bool) -> None:
        self.resuming = resuming
        self._cut_pending = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Called on creation: take the existing record's columns (resuming), or remove it (a fresh start)."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if not self.resuming:
            path.unlink()
            return
        with open(path, newline="") as handle:
            self.metrics_keys = next(csv.reader(handle), [])
        self._cut_pending = True

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        """Record a logging call; the first one of a resumed launch first drops the rows it replaces."""
        if self._cut_pending and step is not None:
            self._cut_pending = False
            rows = [row for row in self._read_rows() if float(row.get("step") or 0) < step]
            self._write_rows(rows, self.metrics_keys)
        super().log_metrics(metrics_dict, step)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """New keys: the whole file with the new header, written beside it and moved into place."""
        self._write_rows(self._read_rows(), fieldnames)

    def _read_rows(self) -> list[dict[str, str]]:
        with open(self.metrics_file_path, newline="") as handle:
            return list(csv.DictReader(handle))

    def _write_rows(self, rows: list[dict[str, str]], fieldnames: list[str]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        with atomic_write(self.metrics_file_path, "wb") as handle:
            handle.write(text.getvalue().encode())


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The metrics record of a run folder: one row per logging call, in step order, with a ``step`` column and a
    column per metric key (``train/d_loss``, ``val/fid``, ...; NaN where the row has no value).

    Raises one-line errors for a folder that does not exist or has no record (naming the runs below it, if any).
    """
    import pandas as pd  # here: every genlit command imports this module, few read a record

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder; give a folder that genlit fit made "
                                "(runs/<family>/<experiment>/<run>)")  # fmt: skip
    path = run / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics record ({RECORD_FILE}); {_record_hint(run)}")
    frame = pd.read_csv(path)
    if "step" not in frame.columns:
        raise ValueError(f"{path} is not a metrics record (no step column); genlit fit writes it in each run folder")
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metric keys of a record that hold values (``train/d_loss``, ``val/fid``, ...)."""
    return [c for c in frame.columns if c.split("/")[0] in STAGES and frame[c].notna().any()]


def _record_hint(run: Path) -> str:
    """Which runs lie below a folder that is not one (an experiment's folder, or a family's), if any."""
    records = [p for pattern in ("*", "*/*") for p in run.glob(f"{pattern}/{RECORD_FILE}")]
    runs = sorted(str(p.parent.relative_to(run)) for p in records)
    if runs:
        shown = ", ".join(runs[-5:])
        return f"it holds runs ({shown}{', ...' if len(runs) > 5 else ''}): give one, or several to compare"
    return ("genlit fit keeps one in every run folder it makes (give a folder runs/<family>/<experiment>/<run>; "
            "runs from before genlit kept one have only their logger's files)")  # fmt: skip
