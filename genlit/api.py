"""genlit from Python (notebooks and scripts): the same runs as the command line, returned as objects.

- :func:`fit` trains an experiment YAML with keyword overrides through the same ``GenlitCLI`` as ``genlit fit``
  (same run folder, ``config.yaml``, checkpoints, resume) and returns a :class:`Run`.
- :func:`load` gives a family back from a checkpoint, a run folder or an exported folder (safely: no code runs).
- :func:`show` draws samples inline: images as a grid, 2-D points as a scatter, texts printed.
- :func:`evaluate` measures samples, a model or a run against reference data (``genlit evaluate``'s figures).
- :func:`runs` lists the run folders under a root as a DataFrame; :func:`plot` draws runs' curves (``genlit plot``).

Errors are raised as exceptions with the command line's one-line messages (no ``SystemExit`` in a kernel). W&B
runs offline as on the command line, and silently (``WANDB_SILENT=true`` unless set).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentError
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]  # a checkout's root (experiments/ lives there)


@dataclass
class Run:
    """What :func:`fit` returns: the trained model, its data and trainer, the run folder and final metrics."""

    model: Any
    datamodule: Any
    trainer: Any
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path | None:
        """The run's newest checkpoint (``last.ckpt`` or a later time-based one), if it wrote any."""
        from genlit.commands.runs import newest_checkpoint

        return newest_checkpoint(self.run_dir)

    def __repr__(self) -> str:
        return f"Run({type(self.model).__name__}, {self.trainer.global_step} steps, run_dir={str(self.run_dir)!r})"

    def _repr_markdown_(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(self.metrics.items()) if k.startswith(("val/", "test/")))
        return f"**{type(self.model).__name__}** run `{self.run_dir}`: {self.trainer.global_step} steps; {shown}"


def config_path(config: str | Path) -> Path:
    """``config`` as given if it exists, else relative to the checkout's root (so ``experiments/...`` works from
    ``notebooks/`` or any folder); one clear error otherwise."""
    path = Path(config).expanduser()
    for candidate in (path, REPO / path, REPO / "experiments" / path):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no experiment config {str(config)!r}; give a YAML path, e.g. experiments/gan/toy_ring8.yaml"
    )


def override_args(section: str, values: Mapping[str, Any] | None) -> list[str]:
    """Command-line overrides for ``trainer``, ``data`` or ``model``: nested mappings become dotted keys; the
    data and model keys go under ``init_args`` (their YAML has a ``class_path``) unless they name it."""
    args: list[str] = []
    for key, value in (values or {}).items():
        if section in ("data", "model") and key not in ("class_path", "init_args"):
            key = f"init_args.{key}"
        if isinstance(value, Mapping) and "class_path" not in value:
            args += override_args(f"{section}.{key}", value)
        else:
            args.append(f"--{section}.{key}={value if isinstance(value, str) else json.dumps(value)}")
    return args


def fit(
    config: str | Path,
    *,
    trainer: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    ckpt_path: str | None = None,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Any] = (),
) -> Run:
    """Train an experiment, exactly as ``genlit fit --config CONFIG`` with the given overrides would.

    ``trainer={"max_steps": 2000}``, ``data={"batch_size": 32}``, ``model={"lr": ...}`` override the YAML
    (nested mappings for nested keys); ``args`` takes further command-line arguments as they would be typed.
    ``ckpt_path="last"`` resumes the newest run of the experiment; ``run_dir`` names a run folder to create or
    continue. ``callbacks`` adds Lightning callback objects (e.g. one defined in the notebook) to the YAML's.
    Returns the :class:`Run` (the model stays in memory, in the state training left it).
    """
    from genlit.cli import GenlitCLI, _finish_wandb
    from genlit.commands.errors import error_line

    os.environ.setdefault("WANDB_SILENT", "true")  # no W&B banners and summaries in a notebook's output

    argv = ["fit", "--config", str(config_path(config))]
    argv += override_args("trainer", trainer) + override_args("data", data) + override_args("model", model)
    argv += list(args)
    argv += ["--ckpt_path", str(ckpt_path)] if ckpt_path else []
    argv += ["--run_dir", str(run_dir)] if run_dir else []
    kernel_argv, sys.argv = sys.argv, sys.argv[:1]  # a kernel's own arguments are not this run's
    try:
        cli = GenlitCLI(args=argv, callbacks=list(callbacks))
    except ArgumentError as err:
        raise ValueError(error_line(err)) from None
    finally:
        sys.argv = kernel_argv
        _finish_wandb()
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    return Run(cli.model, cli.datamodule, cli.trainer, Path(cli.trainer.default_root_dir), metrics)


def load(path: str | Path, device: str | torch.device = "cpu"):
    """The family stored in a checkpoint, in a run folder's newest checkpoint, or in a folder written by
    ``genlit export`` (config.json and model.safetensors, no pickle), in eval mode on ``device``. Checkpoints are
    loaded with ``weights_only=True``: one naming anything genlit does not write is refused."""
    from genlit.checkpoints import is_exported, load_family
    from genlit.commands.runs import newest_checkpoint

    path = Path(path).expanduser()
    if path.is_dir() and not is_exported(path):
        found = newest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"run folder {path} has no checkpoint (checkpoints/*.ckpt); train it longer")
        path = found
    elif not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    return load_family(str(path)).to(device).eval()


def show(samples, nrow: int | None = None, title: str | None = None, size: float = 4.0, max_images: int = 256):
    """Draw samples inline and return the matplotlib Figure (or print texts and return None); ``size`` is the
    figure's width in inches (a grid's height follows its shape).

    ``samples``: images as a float tensor (N, C, H, W) in [-1, 1] (what ``model.sample`` returns) or uint8
    (N, H, W, C), of which the first ``max_images`` are drawn; a path to an ``.npz`` written by ``genlit sample``
    (``arr_0``); 2-D points (N, 2), drawn as a scatter; or a string / list of strings, printed with rules between
    them.
    """
    if max_images < 1 or size <= 0:
        raise ValueError(f"show needs max_images >= 1 and size > 0, got max_images={max_images}, size={size}")
    if isinstance(samples, str) and not samples.endswith(".npz") or _is_texts(samples):
        texts = [samples] if isinstance(samples, str) else list(samples)
        print(("\n" + "-" * 60 + "\n").join(texts))
        return None
    array = _as_array(samples)
    import matplotlib.pyplot as plt

    from genlit.imaging import image_grid

    if array.ndim == 2 and array.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(size, size))
        ax.scatter(array[:, 0], array[:, 1], s=4, alpha=0.5)
        ax.set_aspect("equal")
    elif array.ndim == 4:
        grid = image_grid(array[:max_images], nrow=nrow)  # (H', W', C)
        fig, ax = plt.subplots(figsize=(size, size * grid.shape[0] / grid.shape[1]))  # the grid's own shape
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)
        ax.axis("off")
    else:
        raise ValueError(f"cannot show samples of shape {array.shape}; give images (N, C, H, W) or points (N, 2)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)  # shown once (as the returned value) in Jupyter, not twice
    return fig


def _is_texts(samples) -> bool:
    return isinstance(samples, (list, tuple)) and bool(samples) and all(isinstance(s, str) for s in samples)


def _as_array(samples) -> np.ndarray:
    """Points (N, 2) float, or images uint8 (N, H, W, C), from a tensor, an array or an ``.npz`` path."""
    from genlit.imaging import to_uint8

    if isinstance(samples, (str, Path)):
        path = Path(samples)
        if not path.is_file():
            raise FileNotFoundError(f"no samples file {path}")
        return np.load(path)["arr_0"]
    if isinstance(samples, Tensor):
        if samples.ndim == 4 and samples.dtype != torch.uint8:
            return to_uint8(samples).numpy()  # (N, H, W, C)
        return samples.detach().cpu().numpy()
    return np.asarray(samples)


def evaluate(
    samples,
    reference: str,
    extractor: str | None = None,
    *,
    split: str = "test",
    num: int = 10_000,
    seed: int = 0,
    batch_size: int = 500,
    labels=None,
    use_ema: bool = True,
    nll: bool = True,
    extractor_data: str | None = None,
    inception_weights: str | None = None,
    kid_subset_size: int = 1000,
    val_fraction: float = 0.1,
    cache_dir: str | Path | None = None,
    out: str | Path | None = None,
    **options,
) -> dict:
    """What ``genlit evaluate`` prints, as a dict: ``metrics`` (FID, KID, IS, precision/recall, class statistics,
    a likelihood family's test NLL; a language model's loss, perplexity and bits per unit) with what was measured
    (``source``, ``extractor``, ``num_samples``, ``reference``). Also written as JSON to ``out`` when given.

    ``samples``: an ``.npz`` (``arr_0`` uint8 (N, H, W, C), ``arr_1`` labels), images (a float tensor
    (N, C, H, W) in [-1, 1] as ``model.sample`` returns, or uint8 (N, H, W, C)), or something to draw ``num``
    samples from under ``seed``: a model, a :class:`Run`, a checkpoint or a run folder. ``options`` are the
    family's sampling options (``sampler=DDIMSampler(steps=50)``, ``guidance_scale=2.0``, ...). ``labels``: the
    classes of conditional images given, or those to draw (one int for all). ``reference``: the dataset (Hub id
    or local path; a text file for language models); ``extractor``: ``"evaluator:mnist_classifier"``,
    ``"inception"`` or a classifier checkpoint. ``nll=False`` skips a likelihood family's test NLL.
    """
    from genlit.commands.evaluate import image_record, load_extractor, load_samples, text_record, write_record
    from genlit.families.protocols import Likelihood, TextModel

    if num < 2 or kid_subset_size < 2:
        raise ValueError("num and kid_subset_size must be >= 2")
    model, source = _evaluated_model(samples)
    if isinstance(model, TextModel):
        record = text_record(model, reference, split, val_fraction, batch_size, source)
    else:
        if extractor is None:
            raise ValueError("extractor= is required for images: evaluator:mnist_classifier, 'inception' or a ckpt")
        device = model.device if model is not None else "cpu"
        features = load_extractor(extractor, reference, extractor_data, inception_weights).to(device)
        if model is not None:
            images, labels = _drawn_images(model, num, seed, batch_size, labels, use_ema, options)
        elif isinstance(samples, (str, Path)):
            images, labels = load_samples(samples)
        else:
            images, labels = _given_images(samples), None if labels is None else torch.as_tensor(labels).long()
        record = image_record(
            images, labels, features, reference, split=split, source=source, kid_subset_size=kid_subset_size,
            batch_size=batch_size, cache_dir=cache_dir,
            nll_model=model if nll and isinstance(model, Likelihood) else None,
        )  # fmt: skip
    if out is not None:
        write_record(Path(out), record)
    return record


def _evaluated_model(samples) -> tuple[Any, str]:
    """(the model to draw from, or None for given samples; how the record names the source)."""
    if isinstance(samples, Run):
        return samples.model.eval(), str(samples.run_dir)
    if isinstance(samples, torch.nn.Module):
        return samples.eval(), type(samples).__name__
    if isinstance(samples, (str, Path)):
        path = Path(samples).expanduser()
        if path.suffix == ".npz":
            return None, str(path)
        return load(path, "cuda" if torch.cuda.is_available() else "cpu"), str(path)
    return None, "samples"


def _drawn_images(model, num, seed, batch_size, labels, use_ema, options) -> tuple[Tensor, Tensor | None]:
    """uint8 images (N, C, H, W) drawn from ``model`` as ``genlit evaluate --ckpt`` draws them, and their labels."""
    from genlit.commands.evaluate import drawn_images
    from genlit.commands.sample import draw

    if isinstance(labels, int):
        labels = torch.full((num,), labels, dtype=torch.long)
    model.check_sample_options(**options)
    with torch.no_grad():
        images, labels = draw(model, num, seed=seed, batch_size=batch_size, labels=labels, use_ema=use_ema, **options)
    return drawn_images(images, type(model).__name__), labels


def _given_images(samples) -> Tensor:
    """uint8 (N, C, H, W) of images given as a float tensor (N, C, H, W) in [-1, 1] or uint8 (N, H, W, C)."""
    from genlit.commands.evaluate import images_for_metrics

    if isinstance(samples, np.ndarray) and samples.dtype != np.uint8:
        samples = torch.from_numpy(samples)
    needed = "evaluate needs images: float (N, C, H, W) in [-1, 1] or uint8 (N, H, W, C)"
    return images_for_metrics(_as_array(samples), needed)


HIGHER_IS_BETTER = ("acc", "accuracy", "precision", "recall", "modes_covered", "high_quality_fraction",
                    "inception_score", "elbo", "coverage")  # fmt: skip


def runs(root: str | Path = "runs"):
    """A pandas DataFrame with one row per run folder under ``root`` (any depth; a run folder holds a
    ``config.yaml``): ``experiment`` (its folder under ``root``), ``run``, ``family``, ``start``, ``steps`` (the
    last step recorded) and, for each validation or test metric, its final value and its best (``best val/fid``:
    the lowest; the highest for accuracies, precision, recall and mode coverage). Read from the run folders
    (``config.yaml``, ``metrics.csv``): no W&B, no network."""
    import pandas as pd
    import yaml

    from genlit.commands.record import metric_names, read_metrics

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no runs folder {root}; give the folder genlit fit wrote runs into (e.g. runs)")
    rows = []
    for config in sorted(root.rglob("config.yaml")):
        run = config.parent
        settings = yaml.safe_load(config.read_text()) or {}
        model = (settings.get("model") or {}).get("class_path", "")
        row = {"experiment": str(run.parent.relative_to(root)), "run": run.name, "family": model.rsplit(".", 1)[-1],
               "start": _start_time(run), "path": str(run)}  # fmt: skip
        if (run / "metrics.csv").is_file():
            frame = read_metrics(run)
            row["steps"] = int(frame["step"].max()) if len(frame) else 0
            for name in metric_names(frame):
                if name.startswith(("val/", "test/")):
                    values = frame[name].dropna()
                    best = values.max() if name.rsplit("/", 1)[-1].startswith(HIGHER_IS_BETTER) else values.min()
                    row[name], row[f"best {name}"] = float(values.iloc[-1]), float(best)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("start", kind="stable").reset_index(drop=True) if len(frame) else frame


def _start_time(run: Path):
    """When a run started: from its folder name (``YYYYmmdd-HHMMSS``), else its config's modification time."""
    import pandas as pd

    stamp = pd.to_datetime(run.name[:15], format="%Y%m%d-%H%M%S", errors="coerce")
    return stamp if not pd.isna(stamp) else pd.Timestamp((run / "config.yaml").stat().st_mtime, unit="s")


def plot(run_dirs, out: str | Path | None = None, metrics: Sequence[str] | None = None):
    """The training curves of one run folder, or of several on shared axes (their family's panels, or one panel
    per name in ``metrics``), as ``genlit plot`` draws them; also written to ``out`` when given. Returns the
    matplotlib Figure (Jupyter shows it)."""
    import matplotlib
    import matplotlib.pyplot as plt

    if not plt.get_fignums():  # no pyplot figure yet, so maybe no backend: load it (in Jupyter the inline one,
        plt.switch_backend(matplotlib.get_backend())  # which displays the returned Figure); open ones would close
    from genlit.commands.plot import plot_runs

    if isinstance(run_dirs, Run):
        run_dirs = run_dirs.run_dir
    elif isinstance(run_dirs, Sequence) and not isinstance(run_dirs, str):
        run_dirs = [r.run_dir if isinstance(r, Run) else r for r in run_dirs]
    return plot_runs(run_dirs, out, metrics)
