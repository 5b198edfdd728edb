"""genlit's own evaluators, found or made on first use: an evaluator config trained once per dataset, then cached.

An evaluator spec is ``evaluator:NAME`` (``NAME.yaml`` among the configs genlit ships in ``genlit/configs/evaluators/``;
``experiments/evaluators/NAME.yaml`` is a link to the same file) or the path of an evaluator YAML (a ``genlit fit``
config of a classifier whose data is an ``ImageDataModule``). With the dataset it is trained on, it names one entry
of the cache (:func:`genlit.files.cache_root`):

    <cache root>/evaluators/<NAME>-<key>.ckpt    the trained checkpoint (its run's last.ckpt)
    <cache root>/evaluators/<NAME>-<key>.json    what it was trained from, when, and how long it took

``key`` hashes the parsed config (so comments do not count), the extra training options of ``$GENLIT_EVALUATOR_ARGS``
and the dataset's identity (a local copy's absolute path or a Hub id, and the train split), not the data's contents.

On a miss, one process trains it: a file lock beside the entry makes other processes (other runs, other ranks)
wait, and the checkpoint is published atomically (:func:`genlit.files.atomic_write`), so no reader sees half a
file. The training is ``genlit fit`` of the config in a child process on one device: a process boundary, not an
import (this layer stays below the commands), which also leaves the caller's random state, W&B run and devices
alone. The one line it prints says so; a found entry prints nothing.

``$GENLIT_EVALUATOR_ARGS`` adds ``genlit fit`` options to that training, e.g. ``--trainer.max_steps 60`` for a
quick, rough evaluator in smoke tests, or ``--trainer.accelerator cpu``; they are part of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from genlit.files import atomic_write, cache_root

PREFIX = "evaluator:"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "evaluators"
ARGS_ENV = "GENLIT_EVALUATOR_ARGS"
_CACHE_VERSION = 1  # part of the key: bump when what an entry holds changes
_NAME = re.compile(r"[\w.-]+")
_CHILD_OPTIONS = ("--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                  "--trainer.enable_model_summary", "false",
                  "--trainer.devices", "1", "--trainer.num_nodes", "1")  # fmt: skip
# what launchers and schedulers tell a rank; the child is one process of its own, so it gets none of it
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                "ROLE_RANK", "ROLE_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
                "GENLIT_RUN_DIR")  # fmt: skip
_LAUNCH_PREFIXES = ("SLURM_", "TORCHELASTIC_", "OMPI_", "PMI_", "PMIX_", "LSB_", "JSM_")
_CHILD_HINTS = ("  (set GENLIT_DEBUG=1 for the traceback)", "  (see --help)")


@dataclass(frozen=True)
class Evaluator:
    """One cache entry: an evaluator config trained on a dataset's train split (see the module docstring)."""

    name: str
    config: Path
    dataset: str
    split: str
    train_args: tuple[str, ...]
    key: str
    folder: Path

    @property
    def checkpoint(self) -> Path:
        """The published checkpoint (present = trained)."""
        return self.folder / f"{self.name}-{self.key}.ckpt"

    @property
    def record(self) -> Path:
        """JSON beside the checkpoint: what it was trained from, when, and in how many seconds."""
        return self.checkpoint.with_suffix(".json")

    @property
    def lock(self) -> Path:
        """The file lock that lets one process train."""
        return self.checkpoint.with_suffix(".lock")

    @property
    def work(self) -> Path:
        """The training's own folder (its run and log), removed once the checkpoint is published."""
        return self.folder / f".{self.name}-{self.key}.work"


def is_evaluator_spec(spec: str) -> bool:
    """Whether an extractor spec names an evaluator config (``evaluator:NAME`` or a ``.yaml``/``.yml`` path)."""
    return spec.startswith(PREFIX) or Path(spec).suffix in (".yaml", ".yml")


def evaluator_config(spec: str) -> Path:
    """The config file an evaluator spec names (clear errors for an unknown name or a missing file)."""
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX) :]
        path = CONFIGS / f"{name}.yaml"
        if not (_NAME.fullmatch(name) and path.is_file()):
            raise ValueError(f"unknown evaluator {spec!r}; use one of {_shipped()} or the path of an evaluator YAML")
        return path
    path = Path(os.path.expandvars(os.path.expanduser(spec)))
    if not path.is_file():
        raise FileNotFoundError(f"evaluator config {spec} does not exist; give an existing YAML or {_shipped()}")
    return path.resolve()


def _shipped() -> str:
    return ", ".join(f"{PREFIX}{p.stem}" for p in sorted(CONFIGS.glob("*.yaml")))


def dataset_identity(dataset: str) -> str:
    """A dataset as the cache knows it: a local copy's absolute path (``~`` and ``$VARS`` expanded, links
    resolved), else the Hub id as given."""
    expanded = os.path.expandvars(os.path.expanduser(str(dataset)))
    return str(Path(expanded).resolve()) if os.path.exists(expanded) else expanded


def evaluator(spec: str, dataset: str, cache_dir: str | os.PathLike | None = None) -> Evaluator:
    """The cache entry of evaluator ``spec`` trained on ``dataset`` (a local path or a Hub id); nothing is trained.
    ``cache_dir`` defaults to :func:`genlit.files.cache_root`."""
    path = evaluator_config(spec)
    config = yaml.safe_load(path.read_text()) or {}
    data_args = (config.get("data") or {}).get("init_args") or {}
    identity, split = dataset_identity(dataset), data_args.get("train_split", "train")
    train_args = tuple(shlex.split(os.environ.get(ARGS_ENV, "")))
    key = cache_key(config, train_args, identity, split)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "evaluators"
    return Evaluator(path.stem, path, identity, split, train_args, key, folder)


def cache_key(config: dict, train_args: tuple[str, ...], dataset: str, split: str) -> str:
    """16 hex digits of the SHA-256 of everything that makes an evaluator what it is (not the data's bytes)."""
    what = {"version": _CACHE_VERSION, "config": config, "train_args": list(train_args), "dataset": dataset}
    blob = json.dumps({**what, "split": split}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_or_train(entry: Evaluator, train: Callable[[Evaluator], Path] | None = None) -> Path:
    """The entry's checkpoint, trained once first if no process has: ``train(entry)`` (default
    :func:`train_in_child`) returns a trained checkpoint, which is published atomically under the entry's lock;
    processes that find the lock taken wait for it, then find the checkpoint."""
    if entry.checkpoint.is_file():
        return entry.checkpoint
    entry.folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(entry.lock)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process to train the evaluator {entry.name} (lock {entry.lock})", flush=True)
        lock.acquire()
    try:
        if not entry.checkpoint.is_file():
            _train_and_publish(entry, train or train_in_child)
    finally:
        lock.release()
    return entry.checkpoint


def _train_and_publish(entry: Evaluator, train: Callable[[Evaluator], Path]) -> None:
    """Train (holding the lock), then publish the record and, last, the checkpoint; drop the work folder."""
    print(f"training the evaluator {entry.name} once on {entry.dataset} (minutes on a CPU; then reused), cached at "
          f"{entry.checkpoint}", flush=True)  # fmt: skip
    start = time.monotonic()
    trained = train(entry)
    record = {"config": str(entry.config), "dataset": entry.dataset, "split": entry.split,
              "train_args": list(entry.train_args), "key": entry.key,
              "trained": datetime.now().isoformat(timespec="seconds"),
              "seconds": round(time.monotonic() - start, 1)}  # fmt: skip
    with atomic_write(entry.record, "w") as handle:
        json.dump(record, handle, indent=2)
    with open(trained, "rb") as source, atomic_write(entry.checkpoint) as handle:
        shutil.copyfileobj(source, handle)
    shutil.rmtree(entry.work, ignore_errors=True)


def train_in_child(entry: Evaluator) -> Path:
    """``genlit fit`` of the entry's config on its dataset, in a child process on one device with no logger; the
    run's ``last.ckpt``. A failure is one error carrying the child's own error line and the path of its log."""
    shutil.rmtree(entry.work, ignore_errors=True)  # what an interrupted attempt left (this process holds the lock)
    entry.work.mkdir(parents=True)
    run, log = entry.work / "run", entry.work / "train.log"
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(entry.config), "--run_dir", str(run),
               "--data.init_args.dataset", entry.dataset, *_CHILD_OPTIONS, *entry.train_args]  # fmt: skip
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=_child_env(), cwd=entry.work)
    ckpt = run / "checkpoints" / "last.ckpt"
    if done.returncode != 0 or not ckpt.is_file():
        raise _child_error(entry, log, done.returncode)
    return ckpt


def _child_env() -> dict[str, str]:
    """This process's environment without what launchers tell ranks, and with this genlit first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith(_LAUNCH_PREFIXES)}
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _child_error(entry: Evaluator, log: Path, code: int) -> Exception:
    """``genlit fit``'s own one-line error (bad input: a ValueError), else the exit code; with the log's path."""
    lines = log.read_text(errors="replace").splitlines()
    said = [line.removeprefix("genlit: error: ") for line in lines if line.startswith("genlit: error: ")]
    options = f" with ${ARGS_ENV}={shlex.join(entry.train_args)}" if entry.train_args else ""
    what = f"training the evaluator {entry.name} on {entry.dataset}{options} failed"
    if not said:
        return RuntimeError(f"{what} (exit code {code}): {lines[-1] if lines else 'no output'} (log: {log})")
    line = said[-1]
    for hint in _CHILD_HINTS:  # they name the child's command line, not this one
        line = line.removesuffix(hint)
    return ValueError(f"{what}: {line} (log: {log})")
