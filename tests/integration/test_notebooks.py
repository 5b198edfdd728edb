"""Every notebook runs from a fresh clone in smoke mode (GENLIT_NOTEBOOK_SMOKE=1: tiny steps) in a real Jupyter
kernel, opens with the line of what it shows and how long it takes, and its paired .ipynb carries the outputs of a
full run of the same source."""

import importlib.util
import os

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("notebook_runner", REPO / "notebooks" / "execute.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
SOURCES = runner.sources()


def test_there_are_notebooks():
    assert [p.name[:2] for p in SOURCES] == sorted(p.name[:2] for p in SOURCES) and SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs_in_smoke_mode(source, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLIT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("GENLIT_CACHE_DIR", os.environ.get("GENLIT_CACHE_DIR", str(tmp_path / "cache")))
    notebook = runner.execute(source, smoke=True, timeout=300, cwd=tmp_path)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_opens_with_what_and_how_long_and_has_its_full_outputs(source):
    import jupytext

    notebook = jupytext.read(source)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {source.name[:2]} ")
    assert "minute" in first.source.split("\n\n")[0]  # the time it takes on a laptop CPU
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"run `python notebooks/execute.py {source.name[:2]}` to write {paired.name}"
    executed = jupytext.read(paired)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.source for c in code] == [c.source for c in notebook.cells if c.cell_type == "code"], "out of sync"
    outputs = [o.get("data", {}) for c in code for o in c.get("outputs", [])]
    assert any("image/png" in data for data in outputs), f"{paired.name} holds no pictures: run the full notebook"
    undrawn = [data for data in outputs if str(data.get("text/plain", "")).startswith("<Figure") and len(data) == 1]
    assert not undrawn, f"{paired.name}: a figure was returned as text, not drawn: {undrawn[0]['text/plain']}"
