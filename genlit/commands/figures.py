"""Training curves drawn with matplotlib: one panel per group of metrics, one or several runs on shared axes.

A panel draws each metric NAME of its group as the training curve (``train/NAME``, or its epoch means
``train/NAME_epoch`` when the step values are not there) and the validation points (``val/NAME``) against the
step; a full key (``train/d_real``) draws that column alone. Training curves with many points are smoothed lightly
(a centred moving average over 1/25 of the points, so it does not lag) over the raw values drawn faint. The y axis
is logarithmic when every value is positive and they span more than a factor of :data:`LOG_SPAN`. One run: a
colour per metric; several: a colour per run (named in the figure's legend) and a line style per metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from genlit.commands.record import STAGES
from genlit.files import atomic_write

Panels = Mapping[str, Sequence[str]]
"""Panel title -> metric names (``loss``: its train curve and val points) or full keys (``val/fid``)."""

LOG_SPAN = 30.0  # max/min of positive values above which the y axis is logarithmic
SMOOTH_FROM = 20  # training curves with at least this many points are smoothed
STYLES = ("-", "--", "-.", (0, (4, 1.5, 1, 1.5, 1, 1.5)))  # not ":", which the val points use
MARKERS = ("o", "s", "^", "D", "v")


def series(frame: pd.DataFrame, name: str) -> dict[str, pd.Series]:
    """The values of metric ``name`` in a record by stage (``{"train": ..., "val": ...}``), indexed by step; a
    stage without values is left out."""
    if name.split("/")[0] in STAGES:
        candidates = {name.split("/")[0]: (name,)}
    else:
        candidates = {"train": (f"train/{name}", f"train/{name}_epoch"), "val": (f"val/{name}",)}
    found = {}
    for stage, columns in candidates.items():
        for column in columns:
            if column in frame.columns and frame[column].notna().any():
                found[stage] = frame.set_index("step")[column].dropna()
                break
    return found


def draw_panels(runs: Sequence[tuple[str, pd.DataFrame]], panels: Panels, title: str) -> Figure:
    """A figure of ``panels`` (each with data in at least one run) for ``runs``, (label, record) pairs."""
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    figure = Figure(figsize=(5.0 * ncols, 3.6 * nrows + 0.5), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel_title, names) in zip(axes, panels.items(), strict=False):
        _draw_panel(ax, runs, names)
        ax.set_title(panel_title, fontsize="medium")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    if len(runs) > 1:
        handles = [Line2D([], [], color=f"C{j}", label=label) for j, (label, _) in enumerate(runs)]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(runs), 3), fontsize="small")
    return figure


def _draw_panel(ax, runs: Sequence[tuple[str, pd.DataFrame]], names: Sequence[str]) -> None:
    """Each metric of ``names`` for each run; a legend of what is drawn (grey styles when colours name runs)."""
    several = len(runs) > 1
    legend: dict[str, Line2D] = {}
    values = []
    for i, name in enumerate(names):
        style, marker = STYLES[i % len(STYLES)], MARKERS[i % len(MARKERS)]
        for j, (_, frame) in enumerate(runs):
            color = f"C{j if several else i}"
            found = series(frame, name)
            if "train" in found:
                _draw_train(ax, found["train"], color, style)
            if "val" in found:
                ax.plot(found["val"].index, found["val"].values, color=color, ls=":", lw=0.8, marker=marker, ms=4)
            key_color = "0.35" if several else color
            for stage, data in found.items():
                values.append(data.values)
                line = dict(ls=style) if stage == "train" else dict(ls=":", marker=marker, ms=4)
                legend.setdefault(_key(stage, name), Line2D([], [], color=key_color, **line))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if values and _log_helps(pd.concat([pd.Series(v) for v in values])):
        ax.set_yscale("log")
    ax.legend(legend.values(), legend.keys(), fontsize="x-small")


def _key(stage: str, name: str) -> str:
    return name if name.split("/")[0] in STAGES else f"{stage}/{name}"


def _draw_train(ax, values: pd.Series, color: str, style: str) -> None:
    """A training curve: lightly smoothed over the faint raw values when it has many points."""
    if len(values) < SMOOTH_FROM:
        ax.plot(values.index, values.values, color=color, ls=style, lw=1.4, marker="." if len(values) < 3 else None)
        return
    ax.plot(values.index, values.values, color=color, ls=style, lw=0.8, alpha=0.25)
    window = max(3, len(values) // 25) | 1  # odd, centred: no lag behind the raw values (nor the val points)
    smooth = values.rolling(window, center=True, min_periods=1).mean()
    ax.plot(smooth.index, smooth.values, color=color, ls=style, lw=1.6)


def _log_helps(values: pd.Series) -> bool:
    values = values[pd.notna(values)]
    return bool(len(values) > 1 and (values > 0).all() and values.max() / values.min() > LOG_SPAN)


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` to ``path`` (its format from the suffix: .png, .pdf, .svg, ...), atomically."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format=fmt, dpi=110)


def check_figure_path(path: str | os.PathLike) -> None:
    """One clear error for an output path whose suffix matplotlib cannot write."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"{path}: cannot write a .{fmt or '<no suffix>'} figure; name a file ending in one of "
                         + ", ".join(f".{f}" for f in sorted(formats)))  # fmt: skip
