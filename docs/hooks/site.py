"""MkDocs hook (mkdocs.yml ``hooks:``): the pages that exist only when their sources do.

- Every ``notebooks/*.ipynb`` at the repository root becomes a page under "Notebooks", rendered by
  mkdocs-jupyter with its committed outputs (never executed), and is listed on the notebooks guide where it
  says ``<!-- notebooks-list -->``. With no notebooks the section is the guide alone and the build passes.
- ``genlit.api`` (``genlit/api.py`` or ``genlit/api/``) gets an API reference page once it exists.
- ``<!-- api-rest: genlit.data -->`` on an API page becomes a ``::: genlit.data.<module>`` entry for every module
  of that package the page does not already list: the page names the important modules first, in its own order,
  and a new module appears without editing it.

Nothing is imported from genlit: the API pages are griffe's static reading of the sources.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

NOTEBOOKS_PAGE = "notebooks/index.md"
REFERENCE_SECTION = "API reference"
API_PAGE = "reference/python-api.md"
API_REST = re.compile(r"<!-- api-rest: ([\w.]+) -->")
API_MARKDOWN = """# Python API

`genlit.api`: training, loading, sampling and evaluating from Python (and from the notebooks).

::: genlit.api
"""


def _root(config) -> Path:
    return Path(config.config_file_path).absolute().parent


def _notebooks(config) -> list[Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def _has_api(config) -> bool:
    package = _root(config) / "genlit"
    return (package / "api.py").is_file() or (package / "api" / "__init__.py").is_file()


def _title(notebook: Path) -> str:
    """The notebook's first markdown heading, else its file name."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return notebook.stem
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        for line in source if isinstance(source, list) else source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return notebook.stem


def on_config(config):
    """Put the notebooks under the guide and the ``genlit.api`` page into the API reference, when they exist."""
    notebooks = [f"notebooks/{path.name}" for path in _notebooks(config)]
    for i, entry in enumerate(config.nav or []):
        if not isinstance(entry, dict):
            continue
        ((title, value),) = entry.items()
        if value == NOTEBOOKS_PAGE and notebooks:
            config.nav[i] = {title: [NOTEBOOKS_PAGE, *notebooks]}
        elif title == REFERENCE_SECTION and _has_api(config):
            value.insert(1, {"Python API": API_PAGE})
    return config


@event_priority(50)  # before mkdocs-jupyter's on_files, which turns the .ipynb files into pages
def on_files(files, config):
    """Add the notebooks (from outside docs/) and the generated ``genlit.api`` page to the site's files."""
    root = str(_root(config))
    for path in _notebooks(config):
        files.append(File(f"notebooks/{path.name}", root, config.site_dir, config.use_directory_urls))
    if _has_api(config):
        files.append(File.generated(config, API_PAGE, content=API_MARKDOWN))
    return files


def _rest_of_package(match: re.Match, markdown: str, config) -> str:
    package = match.group(1)
    folder = _root(config).joinpath(*package.split("."))
    modules = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    missing = [f"{package}.{name}" for name in modules if f"::: {package}.{name}\n" not in markdown]
    return "\n\n".join(f"::: {path}" for path in missing)


def on_page_markdown(markdown, page, config, files):
    """Complete the API pages' module lists; list the notebooks on the guide page (or say there are none yet)."""
    markdown = API_REST.sub(lambda match: _rest_of_package(match, markdown, config), markdown)
    if page.file.src_uri != NOTEBOOKS_PAGE:
        return markdown
    notebooks = _notebooks(config)
    items = [f"- [{_title(path)}]({path.name}) (`notebooks/{path.name}`)" for path in notebooks]
    listing = "\n".join(items) or "*No notebook is committed yet: `notebooks/*.ipynb` appear here when they are.*"
    return markdown.replace("<!-- notebooks-list -->", listing)
