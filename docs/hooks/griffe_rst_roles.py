"""Griffe extension for the API pages: two conventions of genlit's docstrings that Markdown and Google-style
parsing would otherwise get wrong.

- Cross-references in Sphinx's roles (``:class:`~genlit.x.Y```, ``:func:`name```, ``:meth:`Class.method```,
  ``:mod:`genlit.x```), which Markdown would print as they are. Each becomes the object's name in code, linked
  to its entry where the site documents it (an *optional* autorefs reference: no link, and no error, where it
  does not). A target without a ``genlit.`` prefix is looked up as Python would: in the object's own scope,
  then its parents' up to the module (an imported name is followed to where it is defined).
- Parameters documented together (``g_optimizer / d_optimizer: optimizer factories``) become one entry each
  with the shared description, so every name matches the signature (a stale name still fails the build).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([\w.]+)`")
SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Other Parameters|Attributes):\s*$")
GROUPED = re.compile(r"^(\s+)(\w+(?:\s*/\s*\w+)+):(.*)$")


class RstRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                text = ROLE.sub(lambda match, obj=obj: _reference(match, obj), obj.docstring.value)
                obj.docstring.value = _split_grouped(text)


def _objects(obj: griffe.Object):
    """``obj`` and every object defined under it (aliases, i.e. imported names, are skipped)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _split_grouped(text: str) -> str:
    """``a / b: description`` (and its continuation lines) in a parameter section -> one entry per name."""
    lines, out, section_indent, i = text.splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if (header := SECTION.match(line)) is not None:
            section_indent = len(header.group(1))
        elif line.strip() and section_indent is not None and indent <= section_indent:
            section_indent = None  # the section ended
        grouped = GROUPED.match(line) if section_indent is not None else None
        if grouped is None:
            out.append(line)
            i += 1
            continue
        body = [grouped.group(3)]
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append("\n" + lines[i])
            i += 1
        for name in grouped.group(2).split("/"):
            out.append(f"{grouped.group(1)}{name.strip()}:" + "".join(body))
    return "\n".join(out)


def _reference(match: re.Match, obj: griffe.Object) -> str:
    short, target = match.group(1), match.group(2)
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{_resolve(target, obj)}" optional><code>{title}</code></autoref>'


def _resolve(target: str, obj: griffe.Object) -> str:
    """The full path of ``target`` as seen from ``obj`` (``target`` itself when nothing in scope matches)."""
    if target.startswith("genlit"):
        return target
    first, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        if first in scope.members:
            found = scope.members[first]
            path = found.target_path if found.is_alias else found.path
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return target
