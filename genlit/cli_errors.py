"""Turn bad-input errors into the one line ``genlit`` prints (``GENLIT_DEBUG=1`` shows the traceback)."""

from __future__ import annotations

import importlib
import re

from jsonargparse import ArgumentError

USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError)  # bad input: one line, no traceback
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_NOT_IMPORTABLE = re.compile(r"Expected a path but (\S+) either not accessible or invalid")
_SUBTYPE = re.compile(r"Subtypes: \[<class '([\w.]+)'>")
_NOISE = ("Does not validate", "Subtypes:", "Errors:", "- Problem with given class_path", "Given value",
          "- Expected a <class 'NoneType'>", "Parser key")  # fmt: skip


def error_line(err: BaseException) -> str:
    """The message of a bad-input error, on one line."""
    if isinstance(err, ArgumentError):
        return parse_error_line(str(err))
    err = _unwrap(err)
    return " ".join(str(err).split()) or type(err).__name__


def parse_error_line(message: str) -> str:
    """Condense jsonargparse's nested parse error to ``--option: what is wrong``.

    E.g. ``--model.loss: Expected a typing.Literal['non_saturating', 'hinge', ...]. Got value: foo``.
    """
    keys = [k for k in _PARSER_KEY.findall(message) if k not in ("model", "data")] or _PARSER_KEY.findall(message)
    lines = [line.strip() for line in message.splitlines()]
    details = [line for line in lines if line and not line.startswith(_NOISE)]
    detail = _unknown_class(message) or (details[0].lstrip("- ") if details else lines[0])
    prefix = _option_name(message, keys)
    return f"{prefix}: {detail}  (see --help)" if prefix else f"{detail}  (see --help)"


def _unknown_class(message: str) -> str | None:
    """``X is not an importable NoiseSchedule; use one of ...`` for a class_path that does not import."""
    value = _NOT_IMPORTABLE.search(message)
    base = _SUBTYPE.search(message, value.end()) if value else None  # the option's own type, not the model's
    if not value or not base:
        return None
    module_name, _, name = base.group(1).rpartition(".")
    try:
        base_class = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    known = sorted(f"{c.__module__}.{c.__qualname__}" for c in _subclasses(base_class) if c.__module__[:6] == "genlit")
    hint = f"; use one of {', '.join(known)}" if known else "; give the class_path of an importable subclass"
    return f"{value.group(1)} is not an importable {base_class.__name__}{hint}"


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _option_name(message: str, keys: list[str]) -> str:
    if not keys:
        return ""
    parents = [k for k in ("model", "data") if f'Parser key "{k}"' in message]
    return "--" + ".".join(parents[:1] + keys[-1:]) if parents and keys[-1] not in parents else "--" + keys[-1]


def _unwrap(err: BaseException) -> BaseException:
    """The error a genlit class raised, not the multi-line wrapper jsonargparse raises ``from`` it.

    jsonargparse re-raises an error from a class's ``__init__`` (e.g. an image size the nets cannot take)
    as "Does not validate against any of the Union subtypes ..." plus the whole config; the cause is the
    one clear line.
    """
    while isinstance(err.__cause__, USER_ERRORS) and _raised_in(err, "jsonargparse"):
        err = err.__cause__
    return err


def _raised_in(err: BaseException, package: str) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith(package + ".")
