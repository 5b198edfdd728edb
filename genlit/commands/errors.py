"""Turn bad-input errors into the one line ``genlit`` prints (``GENLIT_DEBUG=1`` shows the traceback)."""

from __future__ import annotations

import importlib
import inspect
import re

from jsonargparse import ArgumentError

from genlit.families.training import NonFiniteLossError

# bad input, and a run that stops on a non-finite loss: one line, no traceback
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError, NonFiniteLossError)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_NOT_IMPORTABLE = re.compile(
    r"Expected a path but (\S+) either not accessible or invalid|Expected a dot import path string: (\S+)"
)
_RESTRICTED = re.compile(r"Not of type (PositiveInt|NonNegativeInt|PositiveFloat|NonNegativeFloat)\b")
_RESTRICTIONS = {"PositiveInt": "an integer >= 1", "NonNegativeInt": "an integer >= 0",
                 "PositiveFloat": "a number > 0", "NonNegativeFloat": "a number >= 0"}  # fmt: skip
_GIVEN = re.compile(r"Given value: (.*)")
_UNDERSCORED_FLAG = re.compile(r"--[a-z]+(?:_[a-z]+)+")
_ABSTRACT = re.compile(r"Expected an instantiatable class, but \S+ is abstract")


class UsageError(ValueError):
    """A bad command line, already phrased as its one line (printed without the traceback hint)."""


_SUBTYPE = re.compile(r"Subtypes: \[<class '([\w.]+)'>")
_NOISE = ("Does not validate", "Subtypes:", "Errors:", "- Problem with given class_path", "Given value",
          "- Expected a <class 'NoneType'>", "Parser key")  # fmt: skip


def error_line(err: BaseException) -> str:
    """The message of a bad-input error, on one line."""
    if isinstance(err, ArgumentError):
        return parse_error_line(str(err))
    if isinstance(err, UsageError):
        return str(err)
    err = _unwrap(err)
    return " ".join(str(err).split()) or type(err).__name__


def parse_error_line(message: str) -> str:
    """Condense jsonargparse's nested parse error to ``--option: what is wrong``.

    E.g. ``--model.loss: Expected a typing.Literal['non_saturating', 'hinge', ...]. Got value: foo``.
    """
    keys = [k for k in _PARSER_KEY.findall(message) if k not in ("model", "data")] or _PARSER_KEY.findall(message)
    lines = [line.strip() for line in message.splitlines()]
    details = [line for line in lines if line and not line.startswith(_NOISE)]
    prefix = _option_name(message, keys)
    detail = _unknown_class(message) or _restriction(message) or (details[0].lstrip("- ") if details else lines[0])
    if _ABSTRACT.search(message) and prefix:  # init args given without a class (the option's default is none)
        detail = f"name the class first: {prefix} <class name or path> {prefix}.<init arg> <value>"
    return f"{prefix}: {detail}  (see --help)" if prefix else f"{detail}  (see --help)"


def dashed(line: str) -> str:
    """``--batch_size`` -> ``--batch-size`` in an error line of a command whose flags are dashed (the parser's
    keys are not); ``--sampler.num_steps`` keeps its init-arg name."""
    return _UNDERSCORED_FLAG.sub(lambda m: m.group(0).replace("_", "-"), line)


def _restriction(message: str) -> str | None:
    """``must be an integer >= 1, got 0`` for a value outside a restricted number type."""
    found, given = _RESTRICTED.search(message), _GIVEN.search(message)
    if not found:
        return None
    return f"must be {_RESTRICTIONS[found.group(1)]}" + (f", got {given.group(1).strip()}" if given else "")


def _unknown_class(message: str) -> str | None:
    """``X is not an importable NoiseSchedule; use one of ...`` for a class_path that does not import."""
    value = _NOT_IMPORTABLE.search(message)
    if not value:
        return None
    # the option's own type (not the model's): listed after the value in a nested error, before it otherwise
    before = list(_SUBTYPE.finditer(message, 0, value.start()))
    base = _SUBTYPE.search(message, value.end()) or (before[-1] if before else None)
    if not base:
        return None
    module_name, _, name = base.group(1).rpartition(".")
    try:
        base_class = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    known = sorted(f"{c.__module__}.{c.__qualname__}" for c in _subclasses(base_class)
                   if c.__module__[:6] == "genlit" and not inspect.isabstract(c))  # fmt: skip
    hint = f"; use one of {', '.join(known)}" if known else "; give the class_path of an importable subclass"
    return f"{value.group(1) or value.group(2)} is not an importable {base_class.__name__}{hint}"


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
