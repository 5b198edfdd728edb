"""LoRA adapters (Hu et al. 2021, https://arxiv.org/abs/2106.09685) on any module genlit trains, through Hugging Face
``peft`` (https://huggingface.co/docs/peft): the fine-tuning option ``lora`` (:mod:`genlit.families.transfer`).

    genlit fit --config experiments/autoregressive/gpt_shakespeare_char_cpu.yaml --model.init_from exports/gpt \\
        --model.lora '{r: 8, alpha: 16}'

Each adapted layer ``W`` (a Linear, Conv1d/2d/3d or Embedding) computes ``W x + (alpha / r) B A dropout(x)`` with
``A`` (r, in) random and ``B`` (out, r) zero at the start, so a new LoRA run starts exactly at its base model. The
option is a mapping, every key optional:

- ``r`` (8), ``alpha`` (16), ``dropout`` (0.0): the rank, the scale ``alpha / r`` and the dropout on the adapter's
  input.
- ``target``: which layers get adapters: fnmatch patterns over module names, each also matching any dotted suffix
  of a name (``attn.qkv`` matches ``net.blocks.3.attn.qkv``, as in peft's ``target_modules``). Among the modules a
  pattern matches, those LoRA can adapt get adapters (``mlp.*`` adapts ``mlp.fc`` and ``mlp.fc_out``, not the
  activation); a pattern that matches none is one clear error naming the closest layer names. Default: the family's
  :attr:`~genlit.families.training.TrainingModule.lora_targets`.
- ``train``: fnmatch patterns over parameter names (as ``freeze``'s) of the base parameters that keep training
  beside the adapters. Every other parameter is frozen (no gradient, no optimizer state). Default: the family's
  :attr:`~genlit.families.training.TrainingModule.lora_trains`: a GAN's discriminator trains whole, since the generator
  it judges is fine-tuned on new data. ``freeze`` applies afterwards and may freeze adapters too.

When: the adapters are injected when the module is built, after its ``__init__`` (by the metaclass of
:mod:`genlit.families.transfer`), so a LoRA run, its resume, ``load_from_checkpoint`` and ``genlit sample`` all
see the same state-dict names: an adapted layer ``x`` becomes ``x.base_layer`` (its original tensors) beside
``x.lora_A.default`` and ``x.lora_B.default``. ``init_from`` loads the pre-trained tensors into the base layers (by
their plain names) and leaves the adapters fresh. A family's EMA copy carries the same adapters (restarted from the
live ones). ``genlit export`` merges the adapters into the base weights (peft's ``merge_and_unload``) and writes
plain weights under the plain names, which load without peft.

peft: genlit builds peft's ``LoraModel`` tuner on the module in place, which is what ``peft.inject_adapter_in_model``
does, but keeps the tuner, whose ``merge_and_unload`` the export needs (``get_peft_model`` would wrap the module in a
``PeftModel`` and prefix every name). The targets are given to peft as one regular expression of exact module names,
so the EMA copy gets its adapters by name, not by suffix.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from torch import nn

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
"""The layers LoRA adapts."""
ADAPTER = "default"  # the one adapter's name in peft's layers
TRANSFORMER_TARGETS = ("attn.qkv", "attn.out_proj", "mlp.fc", "mlp.fc_out")
"""Default targets of the language models (:class:`genlit.nets.gpt.GPT`): every Linear of each block, the fused
q/k/v and output projections of attention and both layers of the MLP. Adapting all of a transformer's matrices
rather than the LoRA paper's W_q and W_v only matches full fine-tuning more closely at the same rank (Dettmers et
al. 2023, QLoRA, https://arxiv.org/abs/2305.14314). The embeddings and the (tied) head stay as they are."""
UNET_TARGETS = ("attn.qkv", "attn.proj", "conv1", "conv2")
"""Default targets of the diffusion U-Net (:class:`genlit.nets.unet.UNet`): the attention projections, as LoRA for
Stable Diffusion adapts, and the two 3x3 convolutions of every residual block: genlit's small U-Nets attend at one
resolution only, so most of what a fine-tune must change lies in the convolutions."""
_KEYS = ("r", "alpha", "dropout", "target", "train")


@dataclass(frozen=True)
class LoraOptions:
    """The ``lora`` option (see the module docstring); ``target`` and ``train`` None: the family's defaults."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target: tuple[str, ...] | None = None
    train: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, value) -> LoraOptions | None:
        """The options of a ``lora`` mapping (None: no LoRA); one clear error for an unknown key or a bad value."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"lora must be a mapping such as {{r: 8, alpha: 16, target: [attn.qkv]}}, got {value!r}")
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise ValueError(f"lora has no option {', '.join(map(str, unknown))}; its options: {', '.join(_KEYS)}")
        r, alpha, dropout = value.get("r", cls.r), value.get("alpha", cls.alpha), value.get("dropout", cls.dropout)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"lora r (the rank) must be an integer >= 1, got {r!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
            raise ValueError(f"lora alpha must be a number > 0, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {dropout!r}")
        patterns = {key: _patterns(key, value.get(key)) for key in ("target", "train")}
        return cls(r, float(alpha), float(dropout), **patterns)

    def hparams(self) -> dict:
        """The options as a hyperparameter (lists, as YAML writes them)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _patterns(key: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    value = (value,) if isinstance(value, str) else value
    if not isinstance(value, Sequence) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"lora {key} must be a list of name patterns, e.g. [attn.qkv, 'mlp.*'], got {value!r}")
    return tuple(value)


@dataclass
class LoraAdapters:
    """The adapters of one module: its resolved options, the adapted layers' names and peft's tuner (which merges
    them). Kept as a plain attribute (not a sub-module), so it adds nothing to the state dict."""

    options: LoraOptions
    layers: list[str]
    tuner: nn.Module


def add_adapters(
    module: nn.Module, options: LoraOptions, defaults: tuple[Sequence[str], Sequence[str]], mirrors: Mapping[str, str]
) -> LoraAdapters:
    """Inject LoRA adapters into ``module`` in place and set which parameters train (see the module docstring).

    ``defaults`` are the family's (target, train) patterns for options that leave them out; ``mirrors`` maps a
    name prefix to the prefix of a copy that must carry the same adapters and never trains (``{"net.":
    "ema.module."}``: the EMA copy of the net). Returns the adapters with the options resolved."""
    target = options.target if options.target is not None else tuple(defaults[0])
    train = options.train if options.train is not None else tuple(defaults[1])
    if not target:
        raise ValueError(f"{type(module).__name__} has no default LoRA targets; name the layers to adapt with "
                         "--model.lora '{target: [...]}' (fnmatch patterns over module names)")  # fmt: skip
    copies = tuple(mirrors.values())
    layers = adapted_layers(module, target, copies)
    names = layers + [mirrors[p] + name[len(p) :] for name in layers for p in mirrors if name.startswith(p)]
    lora = _peft()
    config = lora.LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, bias="none",
                             target_modules="^(" + "|".join(map(re.escape, names)) + ")$")  # fmt: skip
    tuner = lora.LoraModel(module, config, ADAPTER)
    set_trainable(module, train, copies)
    return LoraAdapters(replace(options, target=target, train=train), layers, tuner)


def _peft():
    """The ``peft`` package, or one clear error telling how to install it."""
    try:
        import peft
    except ImportError:
        raise ValueError("--model.lora needs Hugging Face peft: pip install 'genlit[lora]'") from None
    return peft


def adapted_layers(module: nn.Module, patterns: Sequence[str], skip: Sequence[str] = ()) -> list[str]:
    """The names of the layers of ``module`` LoRA adapts for ``patterns`` (the copies under the ``skip`` prefixes
    left out); one clear error for a pattern that matches no such layer, or for a layer whose weight is tied to
    another's (merging its adapter would change both)."""
    layers = {n: m for n, m in module.named_modules() if n and not n.startswith(tuple(skip))}
    adaptable = [n for n, m in layers.items() if isinstance(m, ADAPTABLE)]
    for pattern in patterns:
        if not any(matches(n, pattern) for n in adaptable):
            matched = {n: m for n, m in layers.items() if matches(n, pattern)}
            raise ValueError(unmatched_target(pattern, adaptable, matched))
    chosen = [n for n in adaptable if any(matches(n, pattern) for pattern in patterns)]  # in the module's order
    owners: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    for name in chosen:
        weight = getattr(layers[name], "weight", None)
        shared = [n for n in owners.get(id(weight), []) if not n.startswith(f"{name}.")]
        if shared:
            raise ValueError(f"--model.lora target {name} shares its weight with {shared[0]} (tied); LoRA cannot "
                             f"adapt a tied layer: leave {name} out of lora.target")  # fmt: skip
    return chosen


def matches(name: str, pattern: str) -> bool:
    """Whether the module ``name`` matches a target ``pattern``: the whole name or a dotted suffix of it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*.{pattern}")


def unmatched_target(pattern: str, adaptable: Sequence[str], other: Mapping[str, nn.Module]) -> str:
    """The one line for a target ``pattern`` that matches no adaptable layer (``other``: the modules it matches)."""
    kinds = "Linear, Conv1d/2d/3d and Embedding layers"
    if other:
        name, found = next(iter(other.items()))
        return (f"--model.lora target {pattern!r} matches {name} (a {type(found).__name__}) but no layer LoRA can "
                f"adapt: it adapts {kinds}")  # fmt: skip
    if not adaptable:
        return f"--model.lora target {pattern!r}: this model has none of the {kinds} LoRA adapts"
    suffixes = {".".join(n.split(".")[-k:]) for n in adaptable for k in (1, 2)}
    suffixes = sorted(s for s in suffixes if not s.split(".")[0].isdigit())
    close = difflib.get_close_matches(pattern, suffixes, n=3, cutoff=0.5) or suffixes[:3]
    return (f"--model.lora target {pattern!r} matches no layer; the closest layer names are {', '.join(close)} "
            f"(patterns are fnmatch over module names or their dotted suffixes, such as {adaptable[-1]})")  # fmt: skip


def is_adapter(name: str) -> bool:
    """Whether a parameter or state-dict name is an adapter's (``...lora_A.default.weight``)."""
    return any(part.startswith("lora_") for part in name.split("."))


def base_name(name: str) -> str:
    """The name a tensor of an adapted layer has without adapters: ``x.base_layer.weight`` -> ``x.weight``."""
    return name.replace(".base_layer.", ".")


def set_trainable(module: nn.Module, train: Sequence[str], copies: Sequence[str]) -> None:
    """Only the adapters and the parameters matching ``train`` train (those under the ``copies`` prefixes never);
    one clear error for a ``train`` pattern that matches no parameter."""
    named = [(n, p) for n, p in module.named_parameters() if not n.startswith(tuple(copies))]
    for pattern in train:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
            tops = ", ".join(sorted({n.split(".")[0] + ".*" for n, _ in named}))
            raise ValueError(f"--model.lora train {pattern!r} matches no parameter; the model's parameters are "
                             f"under {tops}")  # fmt: skip
    for name, param in module.named_parameters():
        keep = not name.startswith(tuple(copies)) and (is_adapter(name) or any(fnmatch.fnmatchcase(name, p)
                                                                                for p in train))  # fmt: skip
        param.requires_grad_(keep)


def merge_adapters(adapters: LoraAdapters) -> None:
    """Merge every adapter into its base layer and put the base layer back in its place (peft's
    ``merge_and_unload``, in the mirrored copies too): the module is then a plain one with plain names. One clear
    error when a merged weight would not be finite."""
    adapters.tuner.merge_and_unload(safe_merge=True)
