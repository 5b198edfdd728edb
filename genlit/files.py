"""Files: the one home for "write beside, then move into place" and for where genlit's caches live.

Atomic writes: a reader (a user, a resumed run, another rank) never sees a half-written file, and a failure leaves
nothing behind: the content goes to a hidden temporary file in the target's folder, which ``os.replace`` moves over
the target only once it is complete. :func:`atomic_folder` does the same for a folder of files (``genlit export``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, replace: bool = True
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` "wb" or "w"); on a clean exit it becomes
    ``path``, on an error it is removed. Parent folders are created.

    ``replace=False`` publishes a cache entry that several processes may write at once: the first writer's
    file stays (a hard link, which fails when ``path`` exists), later ones are dropped.

    The temporary name is unique and opened with "x" (not ``tempfile.mkstemp``, whose 0600 mode would stick
    to the final file), so the result has the usual permissions.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), encoding=encoding if mode == "w" else None) as handle:
            yield handle
        _move_into_place(tmp, path, replace)
    finally:
        tmp.unlink(missing_ok=True)


def _move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails when another process published first
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        os.replace(tmp, path)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary folder beside ``path`` to fill; on a clean exit it is renamed to ``path`` (which must not
    exist, or be an empty folder), on an error it is removed: no reader sees a half-written folder, and a failure
    leaves nothing behind. Parent folders are created."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, path)  # rename(2): atomic, and it replaces an empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def cache_root() -> Path:
    """genlit's cache folder: ``$GENLIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/genlit``, else ``~/.cache/genlit``.

    Read when called (not at import), so a notebook or a test may set the variables first. Each cache is a
    subfolder: ``references`` (``genlit evaluate``'s reference features), ``evaluators`` (trained evaluators).
    """
    explicit = os.environ.get("GENLIT_CACHE_DIR")
    if explicit:
        return Path(os.path.expanduser(explicit))
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache") / "genlit"


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """The first ``length`` hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
