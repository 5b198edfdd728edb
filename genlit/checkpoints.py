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

A folder written by ``genlit export`` holds no pickle at all: ``config.json`` (the class path and hyperparameters,
with the nets as ``class_path``/``init_args``) and ``model.safetensors`` (the weights). :func:`load_exported`
rebuilds the module from them as ``load_from_checkpoint`` rebuilds a ``genlit fit`` checkpoint, after checking that
every class the config names is one genlit writes (:func:`allowed_global`); :func:`load_family` takes either.
:func:`read_weights` gives the named tensors of either (``init_from``, :mod:`genlit.families.transfer`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
from pathlib import Path

import lightning as L
import torch

SAFE_NAMES = frozenset({"functools.partial", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath"})
SAFE_CLASS_MODULES = ("genlit.", "torch.optim.")
DATAMODULE_KEY = "datamodule_hyper_parameters"  # where Lightning stores the DataModule's hyperparameters
EXPORT_CONFIG, EXPORT_WEIGHTS = "config.json", "model.safetensors"  # what genlit export writes into its folder
EXPORT_FORMAT = "genlit-export/1"  # config.json's "format"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")  # a value that could name a Python object


def allowed_global(name: str) -> bool:
    """Whether a checkpoint may name the global ``name`` (``module.attribute``): genlit classes, torch optimizer
    and scheduler classes, ``functools.partial`` and paths; never a function or anything else."""
    if name in SAFE_NAMES:
        return True
    module, _, attribute = name.rpartition(".")
    if not f"{module}.".startswith(SAFE_CLASS_MODULES):  # torch.optim.Adam (a config) as torch.optim.adam.Adam
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
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass the path of a .ckpt file (or of a folder written by genlit export)"
        )
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
    """Rebuild a genlit LightningModule from its checkpoint, or from a folder written by ``genlit export``
    (:func:`load_exported`); a clear error unless it has the method ``needs`` (``sample`` for generative families,
    ``features`` for an evaluator). The checkpoint's names are checked once; the class lookup maps the tensors
    rather than reading them, so the weights are read once."""
    path = Path(ckpt)
    if path.is_dir():
        return load_exported(path, map_location, needs)
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


# ---------------------------------------------------------------------------------------- exported folders
def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``genlit export`` (it holds its config or its weights)."""
    path = Path(path)
    return path.is_dir() and ((path / EXPORT_CONFIG).is_file() or (path / EXPORT_WEIGHTS).is_file())


def read_weights(path: str | os.PathLike, option: str = "init_from") -> dict[str, torch.Tensor]:
    """The named tensors of a genlit checkpoint (its state dict, mapped rather than read whole, with
    ``weights_only=True``) or of a folder written by ``genlit export`` (its ``model.safetensors``); ``option``
    names where the path came from in the errors."""
    path = Path(path)
    if path.is_dir():
        return read_exported_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such checkpoint or exported folder")
    return read_checkpoint(path, mmap=True)["state_dict"]


def read_exported_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of an exported folder's ``model.safetensors`` (no pickle involved); clear errors when it is
    missing or unreadable."""
    from safetensors.torch import load_file

    file = Path(folder) / EXPORT_WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"{folder} has no {EXPORT_WEIGHTS} (the weights); export the model again")
    try:
        return load_file(file)
    except Exception as err:  # noqa: BLE001 - any reading failure means the same thing to the user
        raise ValueError(f"{file} is not a readable safetensors file (corrupt or truncated?): {err}") from None


def read_export_config(folder: str | os.PathLike) -> dict:
    """An exported folder's ``config.json``, checked: JSON, genlit's format, and no name of a Python object beyond
    what genlit writes (:func:`allowed_global`); one clear error otherwise."""
    file = Path(folder) / EXPORT_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{folder} has no {EXPORT_CONFIG}; pass a folder written by genlit export")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not JSON ({err}); export the model again with genlit export") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT or not isinstance(
        config.get("class_path"), str) or not isinstance(config.get("hyper_parameters"), dict):  # fmt: skip
        raise ValueError(f"{file} is not the config of a genlit export ({EXPORT_FORMAT}: format, class_path and "
                         "hyper_parameters); export the model again with genlit export")  # fmt: skip
    refused = _refused_name(config["hyper_parameters"])
    if refused:
        raise ValueError(f"{file} is refused: it names {refused}, which genlit exports never hold (building it "
                         "could run code)")  # fmt: skip
    return config


def load_exported(folder: str | os.PathLike, map_location: str = "cpu", needs: str = "sample") -> L.LightningModule:
    """Rebuild a module from a folder written by ``genlit export``: the class and hyperparameters of its
    ``config.json`` (instantiated as ``load_from_checkpoint`` instantiates a ``genlit fit`` checkpoint's), the
    weights of its ``model.safetensors`` and what the checkpoint stored beside them (a tokenizer). The weights are
    the EMA's where the module kept one, so the module keeps no other EMA. Clear errors for a missing or tampered
    file; nothing in it can run code."""
    folder = Path(folder)
    config = read_export_config(folder)
    family = _exported_class(folder / EXPORT_CONFIG, config["class_path"], needs)
    weights = read_exported_weights(folder)
    module = _instantiate(family, config, folder / EXPORT_CONFIG)
    if getattr(module, "ema", None) is not None:
        module.ema = None  # one set of weights: the EMA's where there was one
    try:
        result = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shapes that disagree
        detail = str(err).splitlines()[-1].strip()
        raise ValueError(f"{folder / EXPORT_WEIGHTS} does not fit its config: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        what = (f"lacks {result.missing_keys[0]}" if result.missing_keys else f"has {result.unexpected_keys[0]}, "
                "which the model does not")  # fmt: skip
        raise ValueError(f"{folder / EXPORT_WEIGHTS} does not fit its config: it {what}; export the model again")
    extras = _checkpoint_extras(folder, config.get("checkpoint_extras") or {})
    if extras:
        module.on_load_checkpoint(extras)
    return module.to(map_location)


def _exported_class(file: Path, class_path: str, needs: str) -> type[L.LightningModule]:
    """The genlit module class ``config.json`` names, checked (importable, a genlit LightningModule with ``needs``)."""
    family = None
    if class_path.startswith("genlit.") and allowed_global(class_path):
        module_name, _, name = class_path.rpartition(".")
        family = getattr(importlib.import_module(module_name), name)
    if family is None or not issubclass(family, L.LightningModule):
        raise ValueError(f"{file} names the model class {class_path}, which is not a genlit model class that can be "
                         "imported here; pass a folder written by genlit export")  # fmt: skip
    if not callable(getattr(family, needs, None)):
        raise ValueError(f"{file} holds a {family.__name__}, which has no {needs}()")
    return family


def _instantiate(family: type[L.LightningModule], config: dict, file: Path) -> L.LightningModule:
    """``family`` built from the exported hyperparameters, as Lightning builds a LightningCLI checkpoint's."""
    from lightning.pytorch.cli import instantiate_module

    try:
        return instantiate_module(family, {"_class_path": config["class_path"], **config["hyper_parameters"]})
    except Exception as err:  # noqa: BLE001 - a config that does not build means the same thing to the user
        cause = err.__cause__ if isinstance(err.__cause__, ValueError | TypeError) else err
        line = " ".join(str(cause).split())[:300]
        raise ValueError(f"{file} does not build a {family.__name__}: {line}") from None


def _checkpoint_extras(folder: Path, extras: dict) -> dict[str, str]:
    """What the checkpoint stored beside the weights (a tokenizer), read from the files ``config.json`` names."""
    found = {}
    for key, name in extras.items():
        path = folder / str(name)
        if Path(str(name)).name != name or not path.is_file():
            raise ValueError(f"{folder / EXPORT_CONFIG} names {name!r} for {key}, which is not a file of the folder")
        found[key] = path.read_text(encoding="utf-8")
    return found


def _refused_name(value) -> str | None:
    """The first string in ``value`` (nested dicts and lists) that names a Python object genlit never writes."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return next((found for item in value if (found := _refused_name(item))), None)
    if isinstance(value, str) and _DOTTED.match(value) and not allowed_global(value):
        try:
            importable = importlib.util.find_spec(value.split(".")[0]) is not None
        except (ImportError, ValueError):
            importable = False
        return value if importable else None
    return None
