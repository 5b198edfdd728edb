"""``genlit plot RUN_DIR [RUN_DIR ...] [--out PATH] [--metrics NAME ...]``: the training curves of runs, read from
their metrics records (``<run>/metrics.csv``, :mod:`genlit.commands.record`), so no account or network is needed.

The panels are the family's (``metric_panels`` of the model class in the run's ``config.yaml``;
:class:`genlit.families.training.TrainingModule`): G and D losses and D(x), D(G(z)) for a GAN, ELBO and KL for a VAE,
the loss overall and by noise-level quartile for diffusion, loss and bits per character for a language model,
and FID (or the toy data's modes) where measured. ``--metrics`` draws others instead, a panel each. Several runs
are drawn on shared axes. The figure goes to ``--out``: by default ``metrics.png`` in the run folder for one run,
``compare.png`` in the current folder for several. ``genlit fit`` writes the same ``metrics.png`` when it ends
(:func:`write_run_figure`). How a panel is drawn: :mod:`genlit.commands.figures`.

In Python (a notebook): ``plot_runs(run_dirs, out=None, metrics=None)`` returns the matplotlib ``Figure``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from jsonargparse import ArgumentParser
from matplotlib.figure import Figure

from genlit.commands.figures import Panels, check_figure_path, draw_panels, save_figure, series
from genlit.commands.options import parse_args
from genlit.commands.record import metric_names, read_metrics
from genlit.families.training import TrainingModule

RUN_FIGURE = "metrics.png"
COMPARE_FIGURE = "compare.png"
_DESCRIPTION = "Draw the training curves of one run, or of several on shared axes, from their metrics.csv."


class NothingToPlot(ValueError):
    """The records hold no values of the metrics asked for (or none at all)."""


def plot_runs(
    run_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,
) -> Figure:
    """The training curves of one or several run folders (their family's panels, or a panel for each of
    ``metrics``: names such as ``loss`` or keys such as ``val/fid``); also written to ``out`` when given."""
    runs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("give at least one run folder")
    if out is not None:
        check_figure_path(out)
    records = [(run_label(run), read_metrics(run)) for run in runs]
    panels = chosen_panels(runs, [frame for _, frame in records], metrics)
    figure = draw_panels(records, panels, _title(runs))
    if out is not None:
        save_figure(figure, out)
    return figure


def write_run_figure(run_dir: str | os.PathLike) -> Path | None:
    """Write ``metrics.png`` into a run folder (at the end of ``genlit fit``); None when nothing was recorded."""
    out = Path(run_dir) / RUN_FIGURE
    try:
        plot_runs([run_dir], out)
    except (NothingToPlot, FileNotFoundError):
        return None
    return out


def chosen_panels(runs: Sequence[Path], frames: Sequence[pd.DataFrame], metrics: Sequence[str] | None) -> Panels:
    """The panels to draw: one per name of ``metrics``, else the families' panels (in run order), each kept when
    some run recorded values for it."""
    if metrics:
        panels = {name: (name,) for name in metrics}
        missing = [name for name in metrics if not any(series(frame, name) for frame in frames)]
        if missing:
            known = sorted({n for frame in frames for n in metric_names(frame)})
            raise NothingToPlot(f"--metrics {' '.join(missing)}: not in the records; they hold {', '.join(known)}")
    else:
        panels = {}
        for run, frame in zip(runs, frames, strict=True):
            panels.update({k: v for k, v in family_panels(run, frame).items() if k not in panels})
    kept = {title: names for title, names in panels.items()
            if any(series(frame, name) for frame in frames for name in names)}  # fmt: skip
    if not kept:
        raise NothingToPlot(f"no metric values to plot in {', '.join(str(r) for r in runs)} (the records are empty)")
    return kept


def family_panels(run_dir: Path, frame: pd.DataFrame) -> Panels:
    """The ``metric_panels`` of the run's model class (from its ``config.yaml``); for a module genlit does not
    know, a panel per metric name in the record."""
    family = model_class(run_dir)
    if isinstance(family, type) and issubclass(family, TrainingModule):
        return family.metric_panels
    names = {key.split("/", 1)[1].removesuffix("_epoch") for key in metric_names(frame)}
    return {name: (name,) for name in sorted(names)}


def model_class(run_dir: Path) -> type | None:
    """The model class named in a run folder's ``config.yaml`` (``model.class_path``), or None."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        module_name, _, name = config["model"]["class_path"].rpartition(".")
        return getattr(importlib.import_module(module_name), name)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ImportError):
        return None


def run_label(run_dir: Path) -> str:
    """How a run is named in figures: ``<experiment>/<run>`` (its folder and the one above)."""
    run = run_dir.absolute()
    return f"{run.parent.name}/{run.name}"


def _title(runs: Sequence[Path]) -> str:
    """The run and its model class (one run), or how many runs of which classes (several)."""
    names = list(dict.fromkeys(cls.__name__ for cls in map(model_class, runs) if cls is not None))
    families = f" ({', '.join(names)})" if names else ""
    return f"{len(runs)} runs{families}" if len(runs) > 1 else run_label(runs[0]) + families


def default_out(runs: Sequence[Path]) -> Path:
    """Where ``genlit plot`` writes without ``--out``: the run's ``metrics.png``, or ``compare.png`` here."""
    return runs[0] / RUN_FIGURE if len(runs) == 1 else Path(COMPARE_FIGURE)


def main(argv: list[str] | None = None) -> None:
    """Run ``genlit plot``."""
    parser = ArgumentParser(prog="genlit plot", description=_DESCRIPTION, exit_on_error=False)
    parser.add_argument("run_dirs", nargs="+", help="run folders (runs/<family>/<experiment>/<run>)")
    parser.add_argument("--out", default=None, help=f"the figure (.png, .pdf, .svg); default: {RUN_FIGURE} in the "
                        f"run folder for one run, {COMPARE_FIGURE} here for several")  # fmt: skip
    parser.add_argument("--metrics", nargs="+", default=None, help="draw these instead of the family's panels: "
                        "names (loss, fid) or keys (train/d_real)")  # fmt: skip
    args = parse_args(parser, sys.argv[1:] if argv is None else list(argv))
    runs = [Path(r) for r in args.run_dirs]
    out = Path(args.out) if args.out else default_out(runs)
    plot_runs(runs, out, args.metrics)
    print(f"wrote {out}")
