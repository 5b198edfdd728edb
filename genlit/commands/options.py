"""What ``genlit sample`` and ``genlit evaluate`` share: the parser, the sampling options and the device.

The options of drawing samples come in two kinds. The contract's own (``--num``, ``--seed``, ``--batch-size``,
``--label``, ``--no-ema``) are the same for every family. A family's own options are the keyword-only
parameters of its ``draw`` (:meth:`~genlit.families.base.GenerativeFamily.sample_options`), read from the
checkpoint's class: ``--sampler DDIMSampler --sampler.eta 0.5`` for a diffusion model (any sampler class by
name or class path, as LightningCLI takes objects), ``--prompt`` or ``--top-k`` for a language model. The
parser is jsonargparse's, so those options take what YAML takes and fail the same way.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any

import torch
from docstring_parser import parse as parse_docstring
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import PositiveInt

from genlit.checkpoints import load_family
from genlit.commands.errors import UsageError, dashed, parse_error_line

SET_BY_THE_COMMAND = {"step_progress": True}  # family options the commands set themselves, not flags
HELP_HINT = "Family options (a diffusion model's --sampler, a language model's --prompt, ...) are listed by "


def resolve_device(spec: str) -> str:
    """``auto`` (CUDA when available, else CPU) or the device given (``cpu``, ``cuda:1``, ...)."""
    if spec != "auto":
        return spec
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_command(argv: list[str], needs: str = "sample"):
    """The model of ``--ckpt`` in ``argv`` on ``--device`` (in eval mode), or None when no checkpoint is given,
    read before the whole command line is parsed, because the family's options depend on it."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--ckpt")
    peek.add_argument("--device", default="auto")
    known, _ = peek.parse_known_args(argv)
    if not known.ckpt:
        return None
    return load_family(known.ckpt, map_location=resolve_device(known.device), needs=needs).eval()


def parse_command(
    prog: str,
    description: str,
    argv: list[str] | None,
    add_arguments: Callable[[ArgumentParser], None],
    num_default: int | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(the ``--ckpt`` model or None, the parsed arguments, the family's sampling options) of a command whose own
    arguments ``add_arguments`` adds; the contract's and the family's sampling options are added here."""
    argv = sys.argv[1:] if argv is None else list(argv)
    model = load_for_command(argv)
    parser = new_parser(prog, description, model)
    add_arguments(parser)
    names = add_sampling_arguments(parser, model, num_default)
    args = parse_args(parser, argv, model)  # without --ckpt: --help, or the error naming what is missing
    return model, args, family_options(parser, args, names, model) if model is not None else {}


def new_parser(prog: str, description: str, model=None) -> ArgumentParser:
    """A parser that raises its errors (``genlit``'s main prints them on one line)."""
    epilog = None if model is not None else HELP_HINT + f"`{prog} --ckpt PATH --help`."
    return ArgumentParser(prog=prog, description=description, epilog=epilog, exit_on_error=False)


def parse_args(parser: ArgumentParser, argv: list[str], model=None):
    """Parse ``argv``; an error becomes one line with the command's dashed flags, and an option the checkpoint's
    family does not take is answered with the options it does take."""
    try:
        return parser.parse_args(argv)
    except ArgumentError as err:
        line = dashed(parse_error_line(str(err)).removesuffix("  (see --help)"))
        if model is not None and line.startswith("unrecognized arguments"):
            flags = ", ".join("--" + name.replace("_", "-") for name in model.sample_options()
                              if name not in SET_BY_THE_COMMAND)  # fmt: skip
            family = type(model).__name__
            if "--prompt" in argv and "prompt" not in model.sample_options():
                line = (f"--prompt needs a model that takes a prompt (a language model or TextDiffusion); "
                        f"this {family} takes none")  # fmt: skip
            line += f"; the sampling options of this {family} checkpoint are {flags}" if flags else (
                f"; a {family} checkpoint has no sampling options of its own")  # fmt: skip
        raise UsageError(f"{line}  (see --help)") from None


def add_sampling_arguments(parser: ArgumentParser, model=None, num_default: int | None = None) -> list[str]:
    """The contract's options of drawing samples, and the family options of ``model`` (a loaded checkpoint);
    returns the names of the family options added."""
    parser.add_argument("--num", type=PositiveInt | None, default=num_default, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="sample i's noise depends only on (seed, i)")
    parser.add_argument("--batch-size", type=PositiveInt, default=500, help="samples drawn at once")
    parser.add_argument("--label", type=int | None, default=None, help="class of every sample (conditional models)")
    parser.add_argument("--no-ema", action="store_true", help="the trained weights, not their EMA")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    if model is None:
        return []
    return add_family_options(parser, type(model))


def add_family_options(parser: ArgumentParser, family: type) -> list[str]:
    """One ``--<name>`` per option of the family's ``draw`` (type, default and help from its signature and
    docstring); returns the option names."""
    hints = typing.get_type_hints(family.draw)
    docs = {p.arg_name: p.description for p in parse_docstring(inspect.getdoc(family.draw) or "").params}
    names = []
    group = parser.add_argument_group(f"{family.__name__} options")
    for name, param in family.sample_options().items():
        if name in SET_BY_THE_COMMAND:
            continue
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=hints.get(name, Any), default=param.default, help=docs.get(name))
        names.append(name)
    return names


def family_options(parser: ArgumentParser, args, names: list[str], model) -> dict[str, Any]:
    """The family options' values (objects such as samplers instantiated), plus those the command sets."""
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    values = instantiate(args)
    options = {name: values[name] for name in names}
    options |= {k: v for k, v in SET_BY_THE_COMMAND.items() if k in model.sample_options()}
    model.check_sample_options(**options)
    return options


def contract_options(args, model, num: int) -> dict[str, Any]:
    """``labels`` (every sample ``--label``, or None for the balanced default) and ``use_ema`` of ``--no-ema``,
    checked against the model."""
    if args.label is not None:
        if not model.conditional:
            raise ValueError("--label is only for class-conditional models; this checkpoint is unconditional")
        if not 0 <= args.label < model.num_classes:
            raise ValueError(f"--label must be in [0, {model.num_classes}), got {args.label}")
    if args.no_ema and model.ema is None:
        raise ValueError("--no-ema: this checkpoint keeps no EMA of its weights (it samples its trained weights)")
    labels = None if args.label is None else torch.full((num,), args.label, dtype=torch.long)
    return {"labels": labels, "use_ema": not args.no_ema}
