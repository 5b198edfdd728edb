"""Loading a genlit module back from its Lightning checkpoint alone: the one checkpoint loader.

``genlit fit`` records the module's class path in the checkpoint's hyperparameters (LightningCLI's
``_class_path``); the class is imported from it and rebuilt with ``load_from_checkpoint`` (hyperparameters and
weights), so no config or dataset is needed. Commands, callbacks (the training-time FID monitor's evaluator)
and notebooks all load through :func:`load_family`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import lightning as L
import torch


def load_family(ckpt: str | os.PathLike, map_location: str = "cpu", needs: str = "sample") -> L.LightningModule:
    """Rebuild a genlit LightningModule from its checkpoint; a clear error unless it has the method ``needs``
    (``sample`` for generative families, ``features`` for an evaluator)."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict); pass a genlit .ckpt file")
    family = family_class(path, checkpoint.get("hyper_parameters") or {}, needs)
    return family.load_from_checkpoint(path, map_location=map_location)


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
