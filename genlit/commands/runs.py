"""Run folders: which folder a ``genlit`` command writes into, and which checkpoint it resumes.

A run folder (``<root>/<YYYYmmdd-HHMMSS>/``, ``root`` being ``trainer.default_root_dir``) holds ``config.yaml``,
``checkpoints/`` and the loggers' files. What a launch gets:

- ``--run_dir DIR``: that folder, created or continued (from its newest checkpoint unless ``--ckpt_path``
  names one).
- ``--ckpt_path last``: the newest run under ``root`` that has a checkpoint, continued from its newest one; an
  error when there is none (never a silent fresh start).
- ``--ckpt_path PATH``: the run folder that holds ``PATH`` (``<run>/checkpoints/x.ckpt``), or a new one for a
  checkpoint from elsewhere.
- nothing: a new folder named by the time, or by the job under SLURM (``slurm-<job>[-step<k>]``, the same
  folder when the job is requeued, which then continues from its newest checkpoint).

Every rank of a launch gets the same folder whatever started it: Lightning's own launcher passes rank 0's
choice to the ranks it starts (``GENLIT_RUN_DIR``), torchrun's ranks read rank 0's choice from the agent's
store, and srun's tasks derive the same name from the SLURM job.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from pathlib import Path

import torch

RUN_DIR_ENV = "GENLIT_RUN_DIR"
CHECKPOINT_PATTERNS = ("checkpoints/*.ckpt", "hpc_ckpt_*.ckpt")  # ModelCheckpoint's, and Lightning's SLURM ones
STORE_KEY = "genlit/run_dir"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run folder (``last.ckpt``, time-based, or SLURM's), if any."""
    found = [p for pattern in CHECKPOINT_PATTERNS for p in run_dir.glob(pattern)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def newest_run(root: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) of the run under ``root`` whose newest checkpoint is the most recent."""
    runs = [(ckpt, run) for run in root.glob("*") if run.is_dir() and (ckpt := newest_checkpoint(run))]
    if not runs:
        raise FileNotFoundError(
            f"--ckpt_path last: no run under {root} has a checkpoint to resume; drop --ckpt_path to start a new "
            "run, or point --trainer.default_root_dir at the runs of this experiment"
        )
    ckpt, run = max(runs, key=lambda pair: pair[0].stat().st_mtime)
    return run, ckpt


def run_of(ckpt: Path) -> Path | None:
    """The run folder that holds the checkpoint ``ckpt`` (``<run>/checkpoints/x.ckpt``, or SLURM's
    ``<run>/hpc_ckpt_n.ckpt``), if it is one (it has a ``config.yaml``)."""
    for run in (ckpt.parent.parent, ckpt.parent):
        if (run / "config.yaml").is_file():
            return run
    return None


def resolve_run(root: str | None, run_dir: str | None, ckpt_path: str | None) -> tuple[Path, str | None]:
    """(the run folder of this launch, the checkpoint to resume or None), as the module docstring says."""
    root_path = Path(root or "runs").absolute()
    if run_dir:
        run = Path(run_dir).absolute()
        if run.exists() and not run.is_dir():
            raise ValueError(f"--run_dir {run_dir} is a file; name a folder (new, or a run folder to continue)")
        return run, _continue(run, ckpt_path)
    if ckpt_path == "last":
        run, ckpt = newest_run(root_path)
        return run, str(ckpt)
    if ckpt_path:
        return run_of(Path(ckpt_path).absolute()) or agreed_run_dir(root_path), ckpt_path
    run = agreed_run_dir(root_path)
    return run, _continue(run, None) if run.exists() else None


def _continue(run: Path, ckpt_path: str | None) -> str | None:
    if ckpt_path not in (None, "last"):
        return ckpt_path
    ckpt = newest_checkpoint(run)
    if ckpt is None and ckpt_path == "last":
        raise FileNotFoundError(f"--ckpt_path last: the run folder {run} has no checkpoint to resume")
    return None if ckpt is None else str(ckpt)


def agreed_run_dir(root: Path) -> Path:
    """This launch's run folder under ``root``, the same on every rank (see the module docstring)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])  # a rank that Lightning's launcher started
    job = slurm_job_name()
    if job is not None:
        chosen = root / job
    elif _torchrun_store_available():
        chosen = Path(_shared_by_rank_zero(lambda: str(new_run_dir(root))))
    else:
        chosen = new_run_dir(root)
    os.environ[RUN_DIR_ENV] = str(chosen)
    return chosen


def new_run_dir(root: Path) -> Path:
    """A folder under ``root`` named by the current time that does not exist yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run, suffix = root / stamp, 1
    while run.exists():
        suffix += 1
        run = root / f"{stamp}-{suffix}"
    return run


def slurm_job_name() -> str | None:
    """``slurm-<job>[-step<k>]`` for a batch job that SLURM runs (the same after a requeue), else None.

    Interactive allocations (``salloc``, a job named ``bash`` or ``interactive``) get time-named folders, as
    Lightning's ``SLURMEnvironment`` does not treat them as managed jobs either."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    step = os.environ.get("SLURM_STEP_ID", "")
    name = f"slurm-{job}" + (f"-step{step}" if step.isdigit() and int(step) < 2**31 else "")
    return re.sub(r"[^\w.-]", "_", name)


def _torchrun_store_available() -> bool:
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _shared_by_rank_zero(choose) -> str:
    """Rank 0's ``choose()``, read by every rank of a torchrun launch from the agent's key-value store (it is up
    before the process group, at MASTER_ADDR:MASTER_PORT). After an elastic restart the value stays."""
    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timedelta(minutes=5)
    )
    if int(os.environ.get("RANK", "0")) == 0 and not store.check([STORE_KEY]):
        store.set(STORE_KEY, choose())
    return store.get(STORE_KEY).decode()
