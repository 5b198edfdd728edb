"""The layer rules of ../shared/DESIGN.md, read off the imports of every module under genlit/.

The layers, top to bottom (imports only point down):

- Face: ``cli.py``, ``api.py`` (the Python API) and ``commands/`` (``genlit sample``, ``genlit evaluate``,
  one-line errors). The Face may import anything below it; ``genlit/__init__.py`` is the public API and
  imports lazily by name.
- ``callbacks/``: sample grids, monitors. From the families they see only the capabilities of
  ``families/protocols.py`` (never a family module); also metrics and helpers.
- ``families/``: one LightningModule per family on one shared base. They import nets (by factory, from
  YAML), the math (``objectives/``, ``diffusion/``), data (the tokenizer a language model stores), metrics
  and helpers; never commands or callbacks.
- ``metrics/``: read samples or features through a feature ``nn.Module``; import helpers only (never
  families or commands).
- ``nets/`` (plain modules), ``objectives/`` and ``diffusion/`` (math on tensors, no parameters), ``data/``
  (DataModules, tokenizers): helpers only.
- helpers: the top-level modules (``imaging``, ``optim``, ``files``, ``seeding``, ``checkpoints``), each one
  idea's home; they import other helpers only.

And no import cycle between these packages.
"""

import ast
from pathlib import Path

import pytest

GENLIT = Path(__file__).resolve().parents[1] / "genlit"
PACKAGES = ("nets", "objectives", "diffusion", "data", "metrics", "families", "callbacks", "commands")
HELPERS = ("imaging", "optim", "files", "seeding", "checkpoints")
FACE = ("cli", "api", "__init__")
HELPERS_ONLY = {"helpers"}
ALLOWED = {
    "helpers": HELPERS_ONLY,
    "nets": {"nets"} | HELPERS_ONLY,
    "objectives": {"objectives"} | HELPERS_ONLY,
    "diffusion": {"diffusion"} | HELPERS_ONLY,
    "data": {"data"} | HELPERS_ONLY,
    "metrics": {"metrics"} | HELPERS_ONLY,
    "families": {"families", "nets", "objectives", "diffusion", "data", "metrics"} | HELPERS_ONLY,
    "callbacks": {"callbacks", "families.protocols", "metrics"} | HELPERS_ONLY,
    "commands": {"commands", "families", "families.protocols", "data", "metrics", "callbacks"} | HELPERS_ONLY,
}


def top_level_layer(name: str) -> str:
    """``face``, ``helpers``, or a package; a top-level module that is in no layer fails the test."""
    if name in FACE:
        return "face"
    if name in HELPERS:
        return "helpers"
    assert name in PACKAGES, f"genlit/{name} is in no layer: add it to HELPERS (a leaf) or move it into a package"
    return name


def layer_of_module(path: Path) -> str:
    """The layer of a file under genlit/."""
    return top_level_layer(path.relative_to(GENLIT).with_suffix("").parts[0])


def layer_of_import(name: str) -> str | None:
    """The layer a ``genlit...`` import reaches (``families.protocols`` apart from the family modules)."""
    parts = name.split(".")
    if parts[0] != "genlit" or len(parts) == 1:
        return None
    if parts[1] == "families" and len(parts) > 2 and parts[2] == "protocols":
        return "families.protocols"
    return top_level_layer(parts[1])


def allowed(source: str, target: str) -> bool:
    """Whether layer ``source`` may import layer ``target`` (a layer that may import the families may import
    their protocols)."""
    if source == "face":
        return True
    return target in ALLOWED[source] or (target == "families.protocols" and "families" in ALLOWED[source])


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (top level or inside functions), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]  # from pkg import mod
    return found


def import_edges() -> list[tuple[str, str, str]]:
    """(importing layer, imported layer, 'file:line name') for every genlit import in genlit/."""
    edges = []
    for path in sorted(GENLIT.rglob("*.py")):
        source = layer_of_module(path)
        for line, name in imports_of(path):
            target = layer_of_import(name)
            if target is not None:
                edges.append((source, target, f"{path.relative_to(GENLIT.parent)}:{line} {name}"))
    return edges


def test_every_import_points_down():
    broken = [f"{where}: {source} may not import {target}" for source, target, where in import_edges()
              if not allowed(source, target)]  # fmt: skip
    assert not broken, "\n".join(broken)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for source, target, _ in import_edges():
        target = target.split(".")[0]
        if source != target:
            graph.setdefault(source, set()).add(target)

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        for nxt in sorted(graph.get(node, ())):
            found = cycle_from(nxt, path + [node])
            if found:
                return found
        return None

    for start in graph:
        assert cycle_from(start, []) is None, " -> ".join(cycle_from(start, []))


@pytest.mark.parametrize(
    "source, name, expected",
    [
        ("nets", "genlit.families.gan", False),
        ("metrics", "genlit.commands.sample", False),
        ("callbacks", "genlit.families.gan", False),
        ("callbacks", "genlit.families.protocols", True),
        ("families", "genlit.callbacks.sample_grid", False),
        ("diffusion", "genlit.nets.unet", False),
        ("helpers", "genlit.metrics.features", False),
        ("families", "genlit.diffusion.samplers", True),
    ],
)
def test_the_rules_catch_what_they_forbid(source, name, expected):
    assert allowed(source, layer_of_import(name)) == expected
