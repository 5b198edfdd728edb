"""The model card ``genlit export`` writes as ``README.md``: the Hugging Face format (YAML front matter with
``library_name``, ``tags``, ``license``, ``datasets``; then Markdown sections), from the export's ``config.json`` and
an optional ``genlit evaluate`` record.

Sections: model description, how to use it (with genlit, and with ONNX Runtime when the export has ``model.onnx``: its
inputs and outputs), training data (what the DataModule's saved hyperparameters record, and
its licence where known), the configuration, evaluation, intended use, limitations, ethical considerations (bias in
the data, ownership of the training data, privacy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

DATA_KEYS = ("dataset", "source", "domain_a", "domain_b")  # where genlit's DataModules name their data
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---", re.S)


def model_card(config: dict, record: dict | None, *, name: str, license: str = "unknown", data_license=None) -> str:
    """The card of an export (its ``config.json`` as :func:`genlit.commands.export.export_config` builds it) with
    the metrics of ``record`` (a ``genlit evaluate`` JSON) when given; ``name`` titles it."""
    family = config["class_path"].rpartition(".")[2]
    data = datasets_of(config.get("data") or {})
    licence = data_license or next((d["license"] for d in data if d.get("license")), None)
    sections = [
        front_matter(config, family, data, license, record),
        f"# {name}\n\nA genlit {family} exported from `{Path(config['source']['checkpoint']).name}`.",
        description(config, family),
        usage(name, config),
        training_data(config, data, licence),
        "## Configuration\n\nThe hyperparameters in `config.json` (enough to rebuild the model, no pickle):\n\n"
        f"```yaml\n{yaml.safe_dump(config['hyper_parameters'], sort_keys=False).rstrip()}\n```",
        evaluation(record),
        INTENDED_USE,
        limitations(config),
        ethics(data, licence),
    ]
    return "\n\n".join(sections) + "\n"


def datasets_of(data: dict) -> list[dict]:
    """The data a DataModule's saved hyperparameters name: ``{"name", "kind" (hub, local or generated), "license"}``
    each, the licence read from a local dataset's own card (``README.md`` front matter) where it has one."""
    found = []
    for key in DATA_KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        path = Path(os.path.expandvars(value)).expanduser()
        if path.exists() or value.startswith(("/", ".", "~", "$")) or not _HUB_ID.match(value):
            found.append({"name": value, "kind": "local", "license": _local_license(path)})
        else:
            found.append({"name": value, "kind": "hub", "license": None})
    if not found and data.get("_class_path", "").endswith("ToyDataModule"):
        found.append({"name": str(data.get("name", "toy")), "kind": "generated", "license": None})
    return found


def _local_license(path: Path) -> str | None:
    """The ``license`` of the dataset card (``README.md`` with YAML front matter) beside a local dataset, if any."""
    folder = path if path.is_dir() else path.parent
    card = folder / "README.md"
    if not card.is_file():
        return None
    match = _FRONT_MATTER.match(card.read_text(encoding="utf-8", errors="replace"))
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return ", ".join(map(str, value)) if isinstance(value, list) else (str(value) if value else None)


def front_matter(config: dict, family: str, data: list[dict], license: str, record: dict | None) -> str:
    """The YAML block the Hugging Face Hub reads."""
    meta = {"library_name": "genlit", "license": license, "tags": ["genlit", family.lower(), modality(config)]}
    hub = [d["name"] for d in data if d["kind"] == "hub"]
    if hub:
        meta["datasets"] = hub
    if record:
        meta["metrics"] = list(record["metrics"])
    return f"---\n{yaml.safe_dump(meta, sort_keys=False).rstrip()}\n---"


def modality(config: dict) -> str:
    """``text-generation``, ``image-generation`` or ``unconditional-generation`` (points, token ids)."""
    hparams = config["hyper_parameters"]
    if "genlit_tokenizer" in config.get("checkpoint_extras", {}):
        return "text-generation"
    shape = hparams.get("data_shape") or hparams.get("shape_a")
    return "image-generation" if isinstance(shape, list) and len(shape) == 3 else "unconditional-generation"


def description(config: dict, family: str) -> str:
    """What the model is: the family, its nets, its data shape and classes, which weights, how long it trained."""
    hparams, source = config["hyper_parameters"], config["source"]
    nets = [f"{k} `{v['class_path']}`" for k, v in hparams.items() if isinstance(v, dict) and "class_path" in v
            and not k.endswith(("optimizer", "scheduler"))]  # fmt: skip
    lines = [f"- Family: `{config['class_path']}`" + (f", with {', '.join(nets)}" if nets else "")]
    if "data_shape" in hparams:
        classes = f", class-conditional on {hparams.get('num_classes')} classes" if hparams.get("conditional") else ""
        lines.append(f"- Data shape: {tuple(hparams['data_shape'])}{classes}")
    if "vocab_size" in hparams:
        lines.append(f"- Vocabulary: {hparams['vocab_size']} tokens, context {hparams.get('block_size')}")
    ema = "the exponential moving average (EMA) of the trained weights" if config["weights"] == "ema" else "as trained"
    lines.append(f"- Weights: {ema}, after {source.get('global_step')} optimizer steps")
    if source.get("init_from"):
        lines.append(f"- Fine-tuned from `{source['init_from']}`")
    lora = source.get("lora")
    if lora:
        lines.append(f"- Fine-tuned with LoRA adapters (rank {lora['r']}, alpha {lora['alpha']:g}) on "
                     f"{', '.join(f'`{t}`' for t in lora['target'])}, merged into these weights")  # fmt: skip
    return "## Model description\n\n" + "\n".join(lines)


def usage(name: str, config: dict) -> str:
    """How to sample from the export (as its modality asks) and fine-tune it; how to run its ONNX graph."""
    draw = ('--prompt "Once upon a time" --max-new-tokens 200 --out sample.txt' if modality(config) == "text-generation"
            else "--num 16 --out samples.npz")  # fmt: skip
    text = "## How to use"
    if "safetensors" in config.get("formats", ["safetensors"]):
        text += (
            "\n\nWith genlit installed, from this folder's path:\n\n```bash\n"
            f"genlit sample --ckpt {name} {draw}\n"
            f"genlit fit --config <your config>.yaml --model.init_from {name}   # fine-tune it\n```\n\n"
            f'```python\nimport genlit\n\nmodel = genlit.load("{name}")\nsamples = model.sample(4)\n```\n\n'
            "Loading reads `config.json` and `model.safetensors` only: nothing in this folder can run code."
        )
    return text + (onnx_usage(name, config["onnx"]) if config.get("onnx") else "")


def onnx_usage(name: str, onnx: dict) -> str:
    """The ONNX graph: what it computes, its inputs and outputs, and how to run it with ONNX Runtime."""
    rows = [f"| {d['name']} | {kind} | {_shape(d['shape'])} | {d['dtype']}"
            + (f", values {d['values']} |" if "values" in d else " |")
            for kind in ("input", "output") for d in onnx[f"{kind}s"]]  # fmt: skip
    feed = ", ".join(f'"{d["name"]}": {_example(d, onnx.get("max_sequence"))}' for d in onnx["inputs"])
    check = onnx["check"]
    return (
        f"\n\n### ONNX\n\n`{onnx['file']}` is {onnx['forward']} (opset {onnx['opset']}). Only this forward is in the "
        "graph: a sampling loop around it (denoising steps, token sampling) is not. Dynamic axes: `batch`"
        + (f" and `sequence` (at most {onnx['max_sequence']})" if onnx.get("max_sequence") else "")
        + ".\n\n| name | | shape | type |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + f"\n\n```python\nimport numpy as np\nimport onnxruntime as ort\n\nsession = ort.InferenceSession("
        f'"{name}/{onnx["file"]}")\n{onnx["outputs"][0]["name"]} = session.run(None, {{{feed}}})[0]\n```\n\n'
        f"Checked at export against torch on random inputs with {check['runtime']}: largest absolute difference "
        f"{check['max_abs_diff']:.2g} (allowed {check['tolerance']:g})."
    )


def _shape(shape: list) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _example(spec: dict, max_sequence: int | None) -> str:
    """A NumPy expression of an example value of an ONNX input (batch 4, sequence 16 or shorter)."""
    size = tuple(4 if a == "batch" else min(16, max_sequence or 16) if a == "sequence" else a for a in spec["shape"])
    if spec["dtype"] == "float32":
        return f"np.random.randn{size}.astype(np.float32)".replace(",)", ")")
    high = int(spec["values"].split("..")[1]) + 1
    return f"np.random.randint(0, {high}, size={size}).astype(np.int64)".replace(",)", ")")


def training_data(config: dict, data: list[dict], licence: str | None) -> str:
    """The training data and its licence, as far as the saved DataModule hyperparameters record them."""
    module = (config.get("data") or {}).get("_class_path")
    if not data:
        return "## Training data\n\nThe checkpoint does not record its training data."
    lines = [f"- {_data_line(d)}" for d in data]
    lines.append(f"- Loaded by `{module}`" if module else "- DataModule: not recorded")
    if all(d["kind"] == "generated" for d in data):
        licence = licence or "none needed (generated in code)"
    unknown = "unknown (genlit could not find it: check the terms of the data before sharing this model or its samples)"
    lines.append(f"- Licence of the data: {licence or unknown}")
    return "## Training data\n\n" + "\n".join(lines)


def _data_line(d: dict) -> str:
    if d["kind"] == "hub":
        return f"`{d['name']}` from the Hugging Face Hub (https://huggingface.co/datasets/{d['name']})"
    if d["kind"] == "generated":
        return f"`{d['name']}`: 2-D points drawn in code by genlit (no external data)"
    return f"`{'/'.join(Path(d['name']).parts[-2:])}`, a local copy (`{d['name']}` on the training machine)"


def evaluation(record: dict | None) -> str:
    """The metrics of the ``genlit evaluate`` record, with what they were measured against."""
    if not record:
        return ("## Evaluation\n\nNot evaluated: run `genlit evaluate --ckpt <checkpoint>` (it writes "
                "`<checkpoint>.eval.json`, which `genlit export` puts here) and export again.")  # fmt: skip
    ref = record.get("reference") or {}
    against = f"{record.get('num_samples')} samples against `{ref.get('dataset')}` [{ref.get('split')}]"
    measure = record.get("extractor") or record.get("tokenizer")
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in record["metrics"].items())  # fmt: skip
    measured = f", measured with {measure}" if measure else ""
    return (f"## Evaluation\n\n`genlit evaluate` ({Path(record['path']).name}): {against}{measured}.\n\n"
            f"| metric | value |\n| --- | --- |\n{rows}\n\nCompare these figures only with figures measured with the "
            "same extractor, sample count and reference.")  # fmt: skip


INTENDED_USE = """## Intended use

Research and teaching on generative models: drawing samples, comparing models and samplers on the same noise,
studying training, and fine-tuning on related data (`--model.init_from`). It is not meant for decisions about
people, for producing content presented as real, or for any use the training data's licence does not allow."""


def limitations(config: dict) -> str:
    """What the model cannot be trusted for."""
    text = modality(config) == "text-generation"
    kind = ("The text is fluent at best, not true: it continues the style of its training text and states nothing "
            "reliably.") if text else "Samples can be blurry, distorted or off the data's distribution."  # fmt: skip
    return (
        f"## Limitations\n\n- {kind}\n- It only knows its training data: it says nothing about data unlike it.\n"
        "- genlit models are small and often trained briefly; check the metrics above before relying on them.\n"
        "- A generative model can reproduce training examples (memorization), above all with few of them."
    )


def ethics(data: list[dict], licence: str | None) -> str:
    """Bias in the data, ownership of the training data, privacy."""
    owner = f" (licence: {licence})" if licence else " (licence unknown)"
    return (
        "## Ethical considerations\n\n"
        "- **Bias in the data**: the model reproduces the distribution of its training data, including its "
        "imbalances (which classes, styles or groups are common or rare) and any stereotypes in it; samples are "
        "not a neutral picture of the world.\n"
        f"- **Ownership of the training data**: the training data belongs to its authors and rights holders{owner}. "
        "The model and its samples derive from it: check that its terms allow sharing the model and using the samples "
        "for your purpose.\n"
        "- **Privacy**: a generative model can memorize and regurgitate training examples. Do not train on, or share a "
        "model trained on, personal data without the consent of the people in it; a language model can repeat names or "
        "other personal details present in its training text."
    )
