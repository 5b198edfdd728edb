"""``genlit evaluate --anomaly FILE``: per-example anomaly scores of a file of images under a likelihood model.

    genlit evaluate --ckpt runs/vae/.../last.ckpt --anomaly images.npz [--background BG.ckpt] [--anomalous-classes 9]

Scores every image of ``FILE`` (``arr_0`` uint8 (N, H, W, C), the evaluation convention; ``arr_1`` labels if any)
with :meth:`~genlit.families.anomaly.AnomalyScoring.anomaly_scores`: the NLL, the complexity-corrected NLL, the
reconstruction error (VAEs) and, given a background model, the likelihood ratio; all per dimension, higher = more
anomalous. Writes the scores to an ``.npz`` (one array per score, and ``labels``) and a JSON record beside it; with
labels and ``--anomalous-classes``, the record holds the AUROC of each score (those classes the positives).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from genlit.commands.evaluate import images_for_metrics, write_record
from genlit.data.images import to_model_space
from genlit.families.protocols import AnomalyScorer
from genlit.files import atomic_write


def anomaly_record(
    model, path: str, background: str | None, anomalous_classes: list[int] | None, batch_size: int, source: str
) -> tuple[dict, dict[str, np.ndarray]]:
    """(the JSON record, the per-example scores) of the images in ``path`` under ``model``."""
    if not isinstance(model, AnomalyScorer):
        raise ValueError(f"{source} holds a {type(model).__name__}, which gives no anomaly scores; pass a VAE, "
                         "PixelCNN or flow checkpoint")  # fmt: skip
    images, labels = _read(path, tuple(model.data_shape))
    if background:
        model.hparams.anomaly_background = background
    scores: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for index, start in enumerate(range(0, len(images), batch_size)):
            x = to_model_space(images[start : start + batch_size]).to(model.device)  # (b, C, H, W)
            for name, value in model.anomaly_scores(x, batch_idx=index).items():
                scores.setdefault(name, []).append(value.double().cpu())
    arrays = {name: torch.cat(values).numpy() for name, values in scores.items()}  # (N,) each
    record = {"source": source, "anomaly_file": str(path), "num_images": len(images), "background": background,
              "scores": sorted(arrays), "mean": {name: float(v.mean()) for name, v in arrays.items()}}  # fmt: skip
    if anomalous_classes:
        if labels is None:
            raise ValueError(f"--anomalous-classes needs labels: {path} has no arr_1")
        is_anomaly = torch.isin(labels, torch.tensor(anomalous_classes))
        if is_anomaly.all() or not is_anomaly.any():
            raise ValueError(f"--anomalous-classes {anomalous_classes}: {path} needs images of those and other classes")
        record["anomalous_classes"] = list(anomalous_classes)
        record["auroc"] = {name: float(binary_auroc(torch.from_numpy(v), is_anomaly.long(), thresholds=None))
                           for name, v in arrays.items()}  # fmt: skip
    if labels is not None:
        arrays["labels"] = labels.numpy()
    return record, arrays


def write_anomaly(out: Path, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """The scores' ``.npz`` at ``out`` and the record beside it (``.json``), each written atomically."""
    with atomic_write(out, "wb") as handle:
        np.savez(handle, **arrays)
    write_record(out.with_suffix(".json"), record)
    for name, value in record.get("auroc", {}).items():
        print(f"  auroc {name:<18} {value:.4f}")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def _read(path: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"--anomaly {path}: no such file")
    try:
        arrays = np.load(path)
        raw, raw_labels = arrays["arr_0"], arrays["arr_1"] if "arr_1" in arrays.files else None
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(f"--anomaly {path} is not an .npz with arr_0 uint8 (N, H, W, C): {err}") from None
    images = images_for_metrics(raw, f"--anomaly {path}: arr_0 must be uint8 (N, H, W, C)")
    labels = None if raw_labels is None else torch.from_numpy(raw_labels).long()
    if tuple(images.shape[1:]) != shape:
        raise ValueError(f"--anomaly {path} holds images {tuple(images.shape[1:])}; the model takes {shape} (C, H, W)")
    return images, labels
