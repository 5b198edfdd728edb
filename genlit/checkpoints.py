"""Loading a genlit module back from its Lightning checkpoint alone: the one checkpoint loader.

``genlit fit`` records the module's class path in the checkpoint's hyperparameters (LightningCLI's
``_class_path``); the class is imported from it and rebuilt with ``load_from_checkpoint`` (hyperparameters and
weights), so no config or dataset is needed. Commands, callbacks (the training-time FID monitor's evaluator)
and notebooks all load through :func:`load_family`.

A checkpoint cannot run code: it is read with ``weights_only=True``, and the only Python objects it may hold
beyond tensors and plain containers are those genlit writes (:func:`allowed_global`): genlit's own classes
(the net factories, schedules and samplers of modules built in Python), ``functools.partial`` of them, torch
optimizer and LR-scheduler classes and ``pathlib`` paths. Any other object (``os.system`` in a crafted pickle)
is refused, by name, before anything is unpickled.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from pathlib import Path

import lightning as L
import torch

SAFE_NAMES = frozenset({"functools.partial", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath"})
SAFE_CLASS_MODULES = ("genlit.", "torch.optim.")


def allowed_global(name: str) -> bool:
    """Whether a checkpoint may name the global ``name`` (``module.attribute``): genlit classes, torch optimizer
    and scheduler classes, ``functools.partial`` and paths; never a function or anything else."""
    if name in SAFE_NAMES:
        return True
    module, _, attribute = name.rpartition(".")
    if not module.startswith(SAFE_CLASS_MODULES):
        return False
    try:
        return inspect.isclass(getattr(importlib.import_module(module), attribute))
    except (ImportError, AttributeError):
        return False


def allow_objects_of(values) -> None:
    """Let ``torch.load(weights_only=True)`` rebuild the objects among ``values`` (a module's hyperparameters)
    that genlit writes: the classes, partials and instances of :func:`allowed_global`, so a module built in
    Python resumes from its own checkpoints. Anything else is left out (and refused when loaded)."""
    found = []

    def visit(value) -> None:
        if isinstance(value, functools.partial):
            found.append(functools.partial)
            visit(value.func)
            for item in (*value.args, *value.keywords.values()):
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif value is not None and not isinstance(value, (str, int, float, bool, torch.Tensor)):
            cls = value if inspect.isclass(value) else type(value)
            if allowed_global(f"{cls.__module__}.{cls.__qualname__}"):
                found.append(cls)

    visit(values)
    torch.serialization.add_safe_globals(list(dict.fromkeys(found)))


def allowed_objects(path: str | os.PathLike) -> list:
    """The objects the checkpoint at ``path`` names beyond torch's own safe set, all of them allowed; a clear
    error naming the first that is not (read from the pickle's opcodes, without unpickling anything)."""
    return _allowed(Path(path), torch.serialization.get_unsafe_globals_in_checkpoint(path))


def _allowed(path: Path, names: list[str]) -> list:
    refused = [name for name in names if not allowed_global(name)]
    if refused:
        raise ValueError(
            f"{path} is refused: its pickle names {refused[0]}, which genlit checkpoints never hold (loading it "
            "could run code); if you wrote it and trust it, load it yourself with torch.load(..., weights_only=False)"
        )
    found = []
    for name in names:
        module, _, attribute = name.rpartition(".")
        found.append(getattr(importlib.import_module(module), attribute))
    return found


def read_checkpoint(ckpt: str | os.PathLike, map_location="cpu", mmap: bool = False) -> dict:
    """The checkpoint's contents, loaded with ``weights_only=True`` (see the module docstring); clear errors for
    a missing, unreadable, refused or non-Lightning file. ``mmap`` maps the tensors instead of reading them (to
    look at the hyperparameters of a large checkpoint)."""
    path = Path(ckpt)
    return _read(path, _checked_objects(path), map_location, mmap)


def _checked_objects(path: Path) -> list:
    """The allowed objects a checkpoint names (:func:`allowed_objects`), with clear errors for a missing or
    unreadable file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a .ckpt file")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - any reading failure means the same thing to the user
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {err}") from None
    return _allowed(path, names)


def _read(path: Path, allowed: list, map_location, mmap: bool) -> dict:
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict); pass a genlit .ckpt file")
    return checkpoint


def load_family(ckpt: str | os.PathLike, map_location: str = "cpu", needs: str = "sample") -> L.LightningModule:
    """Rebuild a genlit LightningModule from its checkpoint; a clear error unless it has the method ``needs``
    (``sample`` for generative families, ``features`` for an evaluator). The checkpoint's names are checked
    once; the class lookup maps the tensors rather than reading them, so the weights are read once."""
    path = Path(ckpt)
    allowed = _checked_objects(path)
    hparams = _read(path, allowed, "cpu", mmap=True).get("hyper_parameters") or {}
    family = family_class(path, hparams, needs)
    with torch.serialization.safe_globals(allowed):
        return family.load_from_checkpoint(path, map_location=map_location, weights_only=True)


def family_class(path: Path, hparams: dict, needs: str = "sample") -> type[L.LightningModule]:
    """The module class a checkpoint at ``path`` records in its hyperparameters (checked for ``needs``)."""
    class_path = hparams.get("_class_path")
    if not class_path:
        raise ValueError(
            f"{path} does not record its model class; it was not written by `genlit fit` "
            "(load it in Python with YourModule.load_from_checkpoint)"
        )
    module_name, _, name = class_path.rpartition(".")
    try:
        family = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{path} was written by {class_path}, which cannot be imported here") from None
    if not callable(getattr(family, needs, None)):
        what = "a generative family" if needs == "sample" else f"a module with {needs}()"
        raise ValueError(f"{path} holds a {name}, which has no {needs}(); pass a checkpoint of {what}")
    return family
