"""Run the notebooks: their jupytext sources (``NN_name.py``, percent format) in a real Jupyter kernel.

    python notebooks/execute.py                 # full runs: write each paired NN_name.ipynb with its outputs
    python notebooks/execute.py --smoke         # smoke mode (GENLIT_NOTEBOOK_SMOKE=1): tiny steps, outputs dropped
    python notebooks/execute.py 01 04           # only the notebooks whose names start with these

Each notebook runs with its own folder as the working directory, in a fresh ``python3`` kernel (nbclient, the
executor nbconvert and papermill use), and fails on the first cell that raises. In smoke mode every notebook
reads ``GENLIT_NOTEBOOK_SMOKE=1`` and shrinks its steps and sample counts; the test suite runs them so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
SMOKE_ENV = "GENLIT_NOTEBOOK_SMOKE"


def sources(prefixes: list[str] | None = None) -> list[Path]:
    """The notebook sources (``NN_*.py``), optionally those whose names start with one of ``prefixes``."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not prefixes or p.name.startswith(tuple(prefixes))]


def execute(source: Path, smoke: bool, timeout: int = 3600, cwd: Path | None = None):
    """Run one notebook source in a fresh kernel, in ``cwd`` (default: the notebook's folder, where its runs
    go under ``runs/``); return the executed notebook (nbformat)."""
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    previous = os.environ.get(SMOKE_ENV)
    os.environ[SMOKE_ENV] = "1" if smoke else "0"  # the kernel inherits this process's environment
    try:
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd or source.parent)}})  # fmt: skip
        client.execute()
    finally:
        if previous is None:
            os.environ.pop(SMOKE_ENV, None)
        else:
            os.environ[SMOKE_ENV] = previous
    return notebook


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_widgets(notebook):
    """The notebook without its widget outputs and widget state: the progress bars, live UI of the run rather than
    its results (hundreds of kilobytes of state per notebook, which GitHub and the docs site cannot draw)."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    notebook.metadata.pop("widgets", None)
    return notebook


def write_paired(source: Path, notebook) -> Path:
    """Write the executed notebook beside its source as ``.ipynb`` (the pair GitHub renders), without widgets."""
    import jupytext

    target = source.with_suffix(".ipynb")
    jupytext.write(without_widgets(notebook), target, fmt="ipynb")
    return target


def main() -> None:
    """Execute the chosen notebooks; write the paired ``.ipynb`` files unless ``--smoke``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose names start with these")
    parser.add_argument("--smoke", action="store_true", help="tiny runs; the .ipynb files are left as they are")
    args = parser.parse_args()
    chosen = sources(args.prefixes)
    if not chosen:
        raise SystemExit(f"no notebook in {NOTEBOOKS} matches {args.prefixes}")
    for source in chosen:
        start = time.perf_counter()
        notebook = execute(source, args.smoke)
        where = "" if args.smoke else f" -> {write_paired(source, notebook).name}"
        print(f"{source.name}: ran in {time.perf_counter() - start:.0f} s{where}", file=sys.stderr)


if __name__ == "__main__":
    main()
