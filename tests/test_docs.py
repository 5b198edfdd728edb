"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing anchor or API reference, a
docstring parameter that is not in the signature, a missing snippet file: each fails it), and the pages that
depend on files appearing later do appear: a notebook with a picture among its outputs, the ``genlit.api`` page.

The build runs once, on a mirror of the repository (links to every top-level entry) whose ``notebooks/`` also holds
a small notebook made here, so the real tree is never written to. About 10-15 s on 2 CPU cores.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter")
NOTEBOOK = "zz_docs_test.ipynb"


def _require_doc_tools() -> None:
    for module in DOC_TOOLS:
        pytest.importorskip(module, reason='the docs tools are not installed: pip install -e ".[docs]"')


def _png() -> str:
    """A 16x16 PNG, base64: the picture of the test notebook's output."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook() -> dict:
    """A notebook as jupytext writes it, with an executed cell whose output is a picture and text."""
    output = {"output_type": "display_data", "metadata": {}, "data": {"image/png": _png(), "text/plain": ["<Figure>"]}}
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Docs test notebook\n", "\n", "A picture follows."]},
        {
            "cell_type": "code",
            "execution_count": 1,
            "metadata": {},
            "outputs": [output, {"output_type": "stream", "name": "stdout", "text": ["fid 12.5\n"]}],
            "source": ["print('fid', 12.5)"],
        },
    ]
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built with ``--strict`` from a mirror of the repository plus a test notebook."""
    _require_doc_tools()
    mirror = tmp_path_factory.mktemp("repo")
    for entry in REPO.iterdir():
        if entry.name not in ("notebooks", "site"):
            (mirror / entry.name).symlink_to(entry)
    (mirror / "notebooks").mkdir()
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        (mirror / "notebooks" / notebook.name).symlink_to(notebook)
    (mirror / "notebooks" / NOTEBOOK).write_text(json.dumps(_notebook()))
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(mirror / "mkdocs.yml"), "-d", str(out)]
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(command, cwd=mirror, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_pages_build(site: Path) -> None:
    for page in ("index.html", "getting-started", "families/gan", "families/diffusion", "cluster", "results"):
        assert (site / page).exists(), page
    assert "<table>" in (site / "results" / "index.html").read_text()  # the results tables


def test_api_reference_from_docstrings(site: Path) -> None:
    contract = (site / "reference" / "families" / "index.html").read_text()
    assert 'id="genlit.families.base.GenerativeFamily"' in contract
    assert ":class:`" not in contract and ":meth:`" not in contract  # Sphinx roles became code and links
    gan = (site / "families" / "gan" / "index.html").read_text()
    assert "n_critic" in gan and "toy_ring8.yaml" in gan  # the options and the experiment YAMLs
    api_page = site / "reference" / "python-api" / "index.html"
    assert api_page.exists() == ((REPO / "genlit" / "api.py").exists() or (REPO / "genlit" / "api").is_dir())


def test_notebooks_are_pages_with_their_outputs(site: Path) -> None:
    page = (site / "notebooks" / NOTEBOOK.removesuffix(".ipynb") / "index.html").read_text()
    assert "Docs test notebook" in page and "fid 12.5" in page
    assert "data:image/png;base64," in page  # the picture among the outputs
    guide = (site / "notebooks" / "index.html").read_text()
    assert "Docs test notebook" in guide  # listed on the guide page


def test_search_index(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text())
    locations = {doc["location"].split("#")[0] for doc in index["docs"]}
    assert {"families/evaluation/", "cluster/", "reference/metrics/"} <= locations
    assert any("precision" in doc["text"].lower() for doc in index["docs"] if doc["location"].startswith("families/"))
