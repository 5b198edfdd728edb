"""Loading Hugging Face datasets by Hub id or from a local copy (directory, parquet or arrow file).

A cached Hub dataset loads without touching the network; otherwise one quick probe replaces the ~25 s of
HTTP retries ``datasets`` spends without a network, and the error names the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `datasets` alone takes about 2 s to import
    import datasets

_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}  # single-file datasets -> `datasets` builder


def _offline_flags() -> list[tuple[object, str]]:
    """The module attributes that switch ``datasets`` and ``huggingface_hub`` to offline mode: ``datasets``
    < 2.20 only has HF_DATASETS_OFFLINE, newer ones read HF_HUB_OFFLINE (each patched where present)."""
    import datasets
    import huggingface_hub

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    flags.append((huggingface_hub.constants, "HF_HUB_OFFLINE"))
    return [(module, name) for module, name in flags if hasattr(module, name)]


_ENV_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def resolve_dataset(dataset: str, option: str = "--data.dataset") -> str:
    """Expand ``~`` and ``$VARS`` in ``dataset``; check local paths exist; return the path or Hub id.

    ``option`` is the command-line option the errors tell the user to fix.
    """
    expanded = os.path.expandvars(os.path.expanduser(dataset))
    unset = _ENV_VAR.search(expanded)
    if unset:
        name = unset.group(1)
        raise ValueError(
            f"environment variable ${name} in {option} {dataset!r} is not set; "
            f"export {name}=/path/to/data or pass a full path"
        )
    if os.path.exists(expanded) or not (_looks_local(dataset) or _looks_local(expanded)):
        return expanded
    origin = f" (from {dataset!r})" if expanded != dataset else ""
    raise FileNotFoundError(
        f"dataset path {expanded!r}{origin} does not exist; point {option} at an existing directory "
        "or .parquet/.arrow file, or give a Hugging Face Hub id such as 'ylecun/mnist'"
    )


def _looks_local(path: str) -> bool:
    """Whether ``path`` can only mean a file system path (a Hub id is ``name`` or ``owner/name``)."""
    return (
        path.startswith(("/", ".", "~"))
        or os.path.isabs(path)
        or path.count("/") > 1
        or (os.sep != "/" and os.sep in path)
        or Path(path).suffix in _FILE_BUILDERS
    )


def load_raw_dataset(
    path: str, cache_dir: str | None = None, option: str = "--data.dataset", streaming: bool = False
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """Load an already resolved dataset (see :func:`resolve_dataset`) as a ``DatasetDict``, undecoded, or
    with ``streaming`` as an ``IterableDatasetDict`` read as it is iterated (nothing converted or cached);
    ``option`` is the command-line option the errors name."""
    import datasets

    if os.path.isfile(path):
        builder = _FILE_BUILDERS.get(Path(path).suffix)
        if builder is None:
            raise ValueError(f"cannot read {path!r}: use a directory or a {'/'.join(_FILE_BUILDERS)} file")
        return datasets.load_dataset(builder, data_files=path, cache_dir=cache_dir, streaming=streaming)
    if os.path.isdir(path):
        return datasets.load_dataset(path, cache_dir=cache_dir, streaming=streaming)
    if streaming:
        return _stream_from_hub(path, option)
    return _load_from_hub(path, cache_dir, option)


def _stream_from_hub(repo_id: str, option: str) -> datasets.IterableDatasetDict:
    """Open a Hub dataset for streaming; one clear error without a network."""
    import datasets

    if not _hub_reachable():
        raise ConnectionError(
            f"cannot stream {repo_id!r}: the Hugging Face Hub is not reachable (no network?); "
            f"use --data.storage disk with a local copy in {option}"
        )
    return datasets.load_dataset(repo_id, streaming=True)


def _load_from_hub(repo_id: str, cache_dir: str | None, option: str) -> datasets.DatasetDict:
    """Load a Hub dataset: the cached copy without network if there is one, else download it."""
    import datasets

    offline = any(getattr(m, n) for m, n in _offline_flags() if m is datasets.config)
    hint = " (HF_HUB_OFFLINE is set)" if offline else " (no network?)"
    message = (
        f"could not load {repo_id!r} from the Hugging Face Hub{hint} and it is not a local path either; "
        "download it once on a machine with internet (it is then cached) or pass "
        f"{option} /path/to/local/copy"
    )
    if not offline:
        try:
            with _hub_offline():
                return datasets.load_dataset(repo_id, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError):
            pass  # not cached yet: download below
        if not _hub_reachable():
            raise ConnectionError(message)
    try:
        return datasets.load_dataset(repo_id, cache_dir=cache_dir)
    except ConnectionError:
        raise ConnectionError(message) from None


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Switch ``datasets`` and ``huggingface_hub`` to offline mode (cache only) for the block."""
    flags = _offline_flags()
    saved = [getattr(m, name) for m, name in flags]
    try:
        for m, name in flags:
            setattr(m, name, True)
        yield
    finally:
        for (m, name), value in zip(flags, saved, strict=True):
            setattr(m, name, value)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One HEAD request to the Hub endpoint (honours proxies); False on any network failure."""
    import huggingface_hub

    try:
        huggingface_hub.get_session().head(huggingface_hub.constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 - a probe: any failure means "not reachable"
        return False
    return True
