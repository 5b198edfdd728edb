"""Fine-tuning from weights: ``init_from``, ``init_strict``, ``init_key_map``, ``freeze`` and ``lora``, for every
module genlit trains.

Every module on :class:`~genlit.families.training.TrainingModule` takes these keyword options without its own
``__init__`` naming them (``--model.init_from PATH --model.freeze '[generator.mapping.*]'`` on ``genlit fit``, or
under ``init_args`` in YAML): :class:`TakesTransferOptions`, the base's metaclass, adds them to each ``__init__``'s
signature (which LightningCLI and ``load_from_checkpoint`` read) and takes them off the arguments before that
``__init__`` runs, keeping them as the module's ``transfer_options`` and in its hyperparameters.

- ``freeze``: :mod:`fnmatch` patterns over parameter names (``net.blocks.0.*``; ``*`` also crosses dots). The base
  applies them in ``setup("fit")``, before Lightning builds the optimizers, which leave frozen parameters out (so
  they get no optimizer state); on a resumed run too, so the optimizer states match. Buffers (BatchNorm statistics)
  are not parameters and keep updating.
- ``init_from``: a genlit checkpoint (``.ckpt``, read with ``weights_only=True``) or a folder written by
  ``genlit export``. Its tensors are copied into the freshly built module (a new run: new optimizer state, step 0)
  where names and shapes match (after the prefix renames of ``init_key_map``, e.g. ``{"generator.": "net."}``), and
  one table of what was loaded, missing and unexpected is printed. Shapes that disagree are one clear error unless
  ``init_strict`` is false (then they are skipped and reported). The module's run state is never copied: its EMA
  restarts from the loaded weights, and its own counters (top-level buffers named ``_...``) start at zero.
- ``lora``: LoRA adapters through Hugging Face ``peft`` (:mod:`genlit.families.lora`), injected when the module is
  built; only the adapters (and what ``lora.train`` names) train. ``init_from`` loads into the adapted layers' base
  weights by their plain names.

When: Lightning calls ``setup``, then restores a resumed run's checkpoint (``--ckpt_path``), then builds the
optimizers, then calls ``on_fit_start``. ``trainer.ckpt_path`` is only set once it restores, so the base loads
``init_from`` in ``on_fit_start`` and only when no checkpoint was restored: a resumed run keeps its own weights
(strategies that restore after setup, FSDP and DeepSpeed, restore after ``on_fit_start``, so their checkpoint
overwrites the loaded weights, as it should; loading into sharded parameters is not supported).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from genlit.checkpoints import read_weights
from genlit.families.lora import LoraAdapters, LoraOptions, base_name, is_adapter

EMA_PREFIX = "ema."  # the state-dict entries of a family's EMA copy (GenerativeFamily.ema)
_KW = inspect.Parameter.KEYWORD_ONLY
TRANSFER_PARAMETERS = (
    inspect.Parameter("init_from", _KW, default=None, annotation=str | None),
    inspect.Parameter("init_strict", _KW, default=True, annotation=bool),
    inspect.Parameter("init_key_map", _KW, default=None, annotation=dict[str, str] | None),
    inspect.Parameter("freeze", _KW, default=None, annotation=list[str] | None),
    inspect.Parameter("lora", _KW, default=None, annotation=dict[str, Any] | None),
)
"""The options every module takes (keyword-only, added to each ``__init__``'s signature)."""
_SIGNATURES: dict = {}  # each __init__ -> (its signature as written, with the transfer options)
_OPTIONS_DOC = [  # their entries in each class's Args (the help of the command line)
    "    init_from: a genlit checkpoint (.ckpt) or a folder written by genlit export, whose matching tensors a new",
    "        run starts from (not a resumed one); fine-tuning options are every module's (genlit.families.transfer).",
    "    init_strict: tensors whose shapes differ from this model's are an error (false: skipped and reported).",
    '    init_key_map: renames of name prefixes in init_from before matching, e.g. {"G.": "generator."}.',
    "    freeze: fnmatch patterns of parameter names that do not train (no optimizer state), e.g. [net.blocks.0.*].",
    "    lora: LoRA adapters (peft), e.g. {r: 8, alpha: 16, dropout: 0.0, target: [attn.qkv], train: []}: only they",
    "        (and what train names) train; target defaults to the family's layers (genlit.families.lora).",
]


@dataclass(frozen=True)
class TransferOptions:
    """The fine-tuning options of one module (see the module docstring)."""

    init_from: str | None = None
    init_strict: bool = True
    init_key_map: Mapping[str, str] = field(default_factory=dict)
    freeze: tuple[str, ...] = ()
    lora: LoraOptions | None = None

    @classmethod
    def take(cls, kwargs: dict) -> TransferOptions:
        """Remove the options from a constructor's keyword arguments ``kwargs``; one clear error for a wrong type."""
        init_from, strict = kwargs.pop("init_from", None), kwargs.pop("init_strict", True)
        lora = LoraOptions.parse(kwargs.pop("lora", None))
        key_map, freeze = kwargs.pop("init_key_map", None) or {}, kwargs.pop("freeze", None) or ()
        freeze = (freeze,) if isinstance(freeze, str) else tuple(freeze)
        if init_from is not None and not isinstance(init_from, str | os.PathLike):
            raise ValueError(f"init_from must be the path of a checkpoint or an exported folder, got {init_from!r}")
        if not isinstance(strict, bool):
            raise ValueError(f"init_strict must be true or false, got {strict!r}")
        if not isinstance(key_map, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in key_map.items()):  # fmt: skip
            raise ValueError(f"init_key_map must map old name prefixes to new ones, e.g. {{'G.': 'generator.'}}, "
                             f"got {key_map!r}")  # fmt: skip
        if not all(isinstance(p, str) and p for p in freeze):
            raise ValueError(f"freeze must be a list of name patterns, e.g. ['generator.mapping.*'], got {freeze!r}")
        return cls(None if init_from is None else os.fspath(init_from), strict, dict(key_map), freeze, lora)

    def hparams(self) -> dict:
        """The options as hyperparameters (as LightningCLI records them)."""
        return {"init_from": self.init_from, "init_strict": self.init_strict,
                "init_key_map": dict(self.init_key_map) or None, "freeze": list(self.freeze) or None,
                "lora": None if self.lora is None else self.lora.hparams()}  # fmt: skip


class TakesTransferOptions(type):
    """Metaclass of :class:`~genlit.families.training.TrainingModule`: every ``__init__`` of its subclasses shows the
    transfer options in its signature, and a call of the class takes them off before ``__init__`` runs (no wrapper
    of ``__init__``, so Lightning's ``save_hyperparameters`` still finds each ``__init__``'s frame)."""

    def __init__(cls, name, bases, namespace, **kwargs) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        init = namespace.get("__init__")
        if inspect.isfunction(init):
            written = inspect.signature(init)
            clash = [p.name for p in TRANSFER_PARAMETERS if p.name in written.parameters]
            if clash:
                raise TypeError(f"{name}.__init__ names {clash[0]}, an option every genlit module takes; rename it")
            params = list(written.parameters.values())
            at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
            extended = written.replace(parameters=[*params[:at], *TRANSFER_PARAMETERS, *params[at:]])
            _SIGNATURES[init] = (written, extended)
            init.__signature__ = extended
            cls.__doc__ = with_options_documented(cls.__doc__)

    def __call__(cls, *args, **kwargs):
        options = TransferOptions.take(kwargs)
        module = super().__call__(*args, **kwargs)
        if options.lora is not None:  # after __init__: the layers exist; before any state dict is loaded
            module.lora_adapters = module.add_lora(options.lora)
            options = replace(options, lora=module.lora_adapters.options)  # the family's defaults filled in
        module.transfer_options = options
        module.hparams.update(options.hparams())
        if hasattr(module, "_hparams_initial"):
            module._hparams_initial.update(options.hparams())
        return module


def with_options_documented(doc: str | None) -> str:
    """``doc`` (a class docstring, Google style) with the transfer options at the end of its ``Args`` section."""
    lines = inspect.cleandoc(doc or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() in ("Args:", "Arguments:")), None)
    if start is None:
        return "\n".join([*lines, "", "Args:", *_OPTIONS_DOC])
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return "\n".join([*lines[:end], *_OPTIONS_DOC, *lines[end:]])


@contextmanager
def signatures_as_written(cls: type) -> Iterator[None]:
    """Within the block the ``__init__`` of each class of ``cls``'s MRO shows the signature it was written with:
    Lightning's ``save_hyperparameters`` reads an ``__init__``'s arguments from its frame by those names, and the
    transfer options are not among its local variables."""
    inits = [c.__dict__["__init__"] for c in cls.__mro__ if c.__dict__.get("__init__") in _SIGNATURES]
    for init in inits:
        init.__signature__ = _SIGNATURES[init][0]
    try:
        yield
    finally:
        for init in inits:
            init.__signature__ = _SIGNATURES[init][1]


# ------------------------------------------------------------------------------------------------------ freeze
def freeze_parameters(module: nn.Module, patterns: Sequence[str]) -> int:
    """Set ``requires_grad`` False on every parameter whose name matches one of the fnmatch ``patterns`` (the EMA
    copy apart) and say so; returns how many tensors. One clear error for a pattern that matches nothing (naming
    the closest parameter prefixes), or when nothing would be left to train."""
    if not patterns:
        return 0
    named = [(n, p) for n, p in module.named_parameters(remove_duplicate=False) if not n.startswith(EMA_PREFIX)]
    names = [n for n, _ in named]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(unmatched_pattern(pattern, names))
    chosen = {id(p): p for n, p in named if any(fnmatch.fnmatchcase(n, pattern) for pattern in patterns)}
    for param in chosen.values():
        param.requires_grad_(False)
    training = {id(p): p for _, p in named if p.requires_grad}
    if not training:
        raise ValueError(f"--model.freeze {list(patterns)} freezes every parameter; nothing would train")
    frozen_count = sum(p.numel() for p in chosen.values())
    say(f"freeze {list(patterns)}: {len(chosen)} tensors ({frozen_count:,} parameters) frozen, "
         f"{sum(p.numel() for p in training.values()):,} parameters train")  # fmt: skip
    return len(chosen)


def unmatched_pattern(pattern: str, names: Sequence[str]) -> str:
    """The one line for a freeze ``pattern`` that matches none of the parameter ``names``."""
    if not names:
        return f"--model.freeze: {pattern!r} matches no parameter; this model has none"
    prefixes = sorted({".".join(n.split(".")[:depth]) for n in names for depth in range(1, n.count(".") + 1)})
    stem = pattern.split("*")[0].split("?")[0].split("[")[0].rstrip(".")
    close = difflib.get_close_matches(stem, prefixes, n=3, cutoff=0.5) if stem else []
    close = close or sorted({n.split(".")[0] for n in names})[:4]
    return (f"--model.freeze: {pattern!r} matches no parameter; the closest parameter prefixes are "
            f"{', '.join(c + '.*' for c in close)} (patterns are fnmatch over names such as {names[0]})")  # fmt: skip


def trainable_parameters(net: nn.Module, what: str) -> list[nn.Parameter]:
    """The parameters of ``net`` that train (not frozen), for an optimizer of its own; one clear error when
    ``freeze`` left it none (its optimizer would have nothing to step). ``what`` names it: ``the generator``."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"--model.freeze froze every parameter of {what}, whose optimizer would have nothing "
                         "to train; leave part of it trainable")  # fmt: skip
    return params


# --------------------------------------------------------------------------------------------------- init_from
def is_run_state(name: str) -> bool:
    """Whether a state-dict entry is the run's rather than the model's: the EMA copy (restarted from the loaded
    weights) and the module's own counters (top-level buffers named ``_...``: steps, skips, running means)."""
    return name.startswith(EMA_PREFIX) or ("." not in name and name.startswith("_"))


@dataclass
class InitReport:
    """What ``init_from`` loaded: tensor names by outcome (``mismatched``: name, shape in the file, shape here)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    run_state: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)

    def table(self) -> str:
        """One table: the count and the (abbreviated) names of each outcome."""
        fresh = "kept their fresh initialization"
        run = "not copied: the EMA restarts from the loaded weights, counters at 0"
        rows = [("loaded", self.loaded, ""), ("missing", self.missing, fresh),
                ("unexpected", self.unexpected, "in the file, not in this model"),
                ("shape skipped", [m[0] for m in self.mismatched], f"shapes differ; {fresh}"),
                ("run state", self.run_state, run)]  # fmt: skip
        if self.adapters:
            rows.append(("lora adapters", self.adapters, "fresh (B = 0): the run starts at the loaded model"))
        lines = [f"init_from {self.source}: {len(self.loaded)} tensors loaded"]
        for label, names, note in rows:
            shown = abbreviated(names) + (f"  ({note})" if names and note else "")
            lines.append(f"  {label:<14}{len(names):>6}  {shown}".rstrip())
        return "\n".join(lines)


def renamed(source: Mapping[str, Tensor], key_map: Mapping[str, str]) -> dict[str, Tensor]:
    """``source`` with each name's longest matching old prefix of ``key_map`` replaced by its new one."""
    prefixes = sorted(key_map, key=len, reverse=True)
    out = {}
    for name, tensor in source.items():
        old = next((p for p in prefixes if name.startswith(p)), None)
        out[name if old is None else key_map[old] + name[len(old) :]] = tensor
    return out


def match_weights(
    target: Mapping[str, Tensor], source: Mapping[str, Tensor], strict: bool = True, where: str = "init_from"
) -> tuple[dict[str, Tensor], InitReport]:
    """The tensors of ``source`` to load into a module whose state dict is ``target`` (same name and shape, run
    state apart) and the report. Shapes that differ are one clear error when ``strict``, else skipped. ``where``
    names the source in messages."""
    report = InitReport(where)
    report.run_state = sorted({n for n in (*target, *source) if is_run_state(n)})
    wanted = {n: t for n, t in target.items() if not is_run_state(n)}
    given = {n: t for n, t in source.items() if not is_run_state(n)}
    report.missing = sorted(set(wanted) - set(given))
    report.unexpected = sorted(set(given) - set(wanted))
    tensors = {}
    for name in sorted(set(wanted) & set(given)):
        if tuple(given[name].shape) == tuple(wanted[name].shape):
            tensors[name] = given[name]
        else:
            report.mismatched.append((name, tuple(given[name].shape), tuple(wanted[name].shape)))
    report.loaded = sorted(tensors)
    if report.mismatched and strict:
        name, there, here = report.mismatched[0]
        more = f" and {len(report.mismatched) - 1} more" if len(report.mismatched) > 1 else ""
        raise ValueError(f"init_from {where}: {name} is {there} in the file but {here} here{more}; set "
                         "--model.init_strict false to skip the tensors whose shapes differ")  # fmt: skip
    if not tensors:
        raise ValueError(f"init_from {where}: none of its {len(given)} tensors matches this model's names and shapes "
                         f"(the file's: {abbreviated(list(given), 3)}; this model's: {abbreviated(list(wanted), 3)}); "
                         "rename prefixes with --model.init_key_map '{\"old.\": \"new.\"}'")  # fmt: skip
    return tensors, report


def initialize_from(module: nn.Module, options: TransferOptions) -> InitReport | None:
    """Load ``options.init_from`` into ``module`` (:func:`match_weights` after the renames of ``init_key_map``; the
    base weights of LoRA-adapted layers by their plain names, the adapters left fresh), restart its EMA from the
    loaded weights (``restart_ema``, where it keeps one) and print the table; None when there is nothing to load."""
    if options.init_from is None:
        return None
    source = renamed(read_weights(options.init_from, option="--model.init_from"), options.init_key_map)
    if any(is_adapter(name) for name in source):
        raise ValueError(f"init_from {options.init_from} holds LoRA adapters; genlit export it first (which merges "
                         "them into the weights) and start from the export")  # fmt: skip
    state = module.state_dict()
    plain = {base_name(name): name for name in state if not is_adapter(name)}  # adapted layers by their plain names
    target = {name: state[real] for name, real in plain.items()}
    tensors, report = match_weights(target, source, options.init_strict, options.init_from)
    module.load_state_dict({plain[name]: tensor for name, tensor in tensors.items()}, strict=False)
    report.adapters = sorted(n for n in state if is_adapter(n) and not n.startswith(EMA_PREFIX))
    restart = getattr(module, "restart_ema", None)
    if callable(restart):
        restart()
    say(report.table())
    return report


def lora_summary(module: nn.Module, adapters: LoraAdapters) -> str:
    """One line: the adapters of ``module``, what else trains and what is frozen (the EMA copy apart)."""
    params = [(n, p) for n, p in module.named_parameters() if not n.startswith(EMA_PREFIX)]
    adapter = sum(p.numel() for n, p in params if is_adapter(n) and p.requires_grad)
    other = sum(p.numel() for n, p in params if p.requires_grad and not is_adapter(n))
    frozen = sum(p.numel() for _, p in params if not p.requires_grad)
    o = adapters.options
    also = f" ({', '.join(o.train)})" if other else ""
    return (f"lora r={o.r} alpha={o.alpha:g} dropout={o.dropout:g}: adapters on {len(adapters.layers)} layers "
            f"({abbreviated(adapters.layers)}); {adapter:,} adapter parameters and {other:,} others{also} train, "
            f"{frozen:,} frozen")  # fmt: skip


def abbreviated(names: Sequence[str], limit: int = 4) -> str:
    """``names`` grouped under common prefixes (at most ``limit`` groups shown, the largest first), a group of one
    as its name: ``generator.net.* (6), discriminator.head.weight``."""
    if not names:
        return ""
    names = sorted(names)
    chosen: dict[str, list[str]] = {}
    for depth in range(1, max(n.count(".") for n in names) + 2):
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(".".join(name.split(".")[:depth]), []).append(name)
        if chosen and (len(groups) > limit or len(chosen) not in (1, len(groups))):
            break  # deeper only while it splits nothing, or splits a single group into few
        chosen = groups
    largest_first = sorted(chosen.items(), key=lambda item: (-len(item[1]), item[0]))
    shown = [members[0] if len(members) == 1 else f"{prefix}.* ({len(members)})" for prefix, members in largest_first]
    rest = f", +{len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + rest


@rank_zero_only
def say(text: str) -> None:
    print(text, flush=True)
