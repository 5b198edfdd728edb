# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Fine-tuning and export: a Shakespeare GPT learns one speaker, then ships as a folder
# Pre-train a character GPT on Tiny Shakespeare without one speaker's lines, fine-tune it on that speaker alone
# against the same network trained from scratch for the same steps (and fine-tune it again with half of it frozen,
# and with LoRA adapters), then export the fine-tuned model with `genlit export` (safetensors, config, tokenizer,
# model card) and load it back with `genlit.load`: the same samples for the same seed; 3.5 minutes measured on this
# project's 2-core CPU machine (one thread, the other core busy).
#
# The options are every module's (`docs/export.md`): `init_from` (a checkpoint or an exported folder to start from),
# `freeze` (parameter-name patterns that do not train), `lora` (low-rank adapters, the rest frozen), and, for text,
# the DataModule's `tokenizer_from`, so that the new corpus is encoded with the pre-trained model's token ids. The
# runs are the YAMLs of `experiments/finetune/`, shortened; `python -m benchmarks.transfer` runs the same chain (and
# its image counterpart, a DCGAN pre-trained on digits 0-4 and fine-tuned on 500 images of 5-9) at equal steps as a
# script.

# %%
import json
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from lightning import Callback

import genlit
from genlit.cli import main as genlit_command
from genlit.data.speakers import write_speaker_corpora

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
PRETRAIN_STEPS = 20 if SMOKE else 2000  # on every other speaker's lines (the YAML's own length)
STEPS = 10 if SMOKE else 300  # on the held-out speaker's lines, each run
EVERY = 5 if SMOKE else 25  # steps between points of the curves
OTHERS_BLOCKS = 20 if SMOKE else None  # validation blocks of the others' text scored (None: all 1,680)
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
         "callbacks": [], "limit_val_batches": 0}  # fmt: skip
WARMUP = {"gpt_others_pretrain": 100, "gpt_speaker_finetune": 20, "gpt_speaker_lora": 20, "gpt_speaker_scratch": 50}
PLAY = os.path.join(os.environ["GENLIT_DATA_DIR"], "tinyshakespeare", "input.txt")


class ValidationCurve(Callback):
    """Bits per character on the DataModule's validation blocks (all of them) at the start of training and every
    ``every`` steps: ``points`` is a list of (step, bits per char)."""

    def __init__(self, every: int) -> None:
        self.every, self.points = every, []

    def on_train_start(self, trainer, model) -> None:
        self.blocks = list(trainer.datamodule.val_dataloader())  # [(x, y) (B, 64) each]
        self.measure(trainer, model)

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            self.measure(trainer, model)

    def measure(self, trainer, model) -> None:
        with torch.no_grad(), model.eval_mode():
            nats = sum(model.token_nll(x, y).sum().item() for x, y in self.blocks)
            chars = sum(model.units_of(y).sum().item() for _, y in self.blocks)
        self.points.append((trainer.global_step, nats / chars / math.log(2)))


def train(config: str, steps: int, data: dict, curve: bool = True, **model) -> tuple[genlit.Run, Path, list, float]:
    """``genlit.fit`` of an ``experiments/finetune`` YAML with the ``data`` and ``model`` overrides for ``steps``
    steps (its learning-rate schedule fitted to them), without its callbacks and logger; returns the run, its final
    checkpoint, its validation curve (``curve``; else empty) and the seconds it took."""
    points = ValidationCurve(EVERY)
    warmup = min(WARMUP[config], steps // 10)
    schedule = {"lr_scheduler": {"init_args": {"decay_steps": steps, "warmup_steps": warmup}}}
    start = time.perf_counter()
    run = genlit.fit(f"experiments/finetune/{config}.yaml", trainer={**QUIET, "max_steps": steps}, data=data,
                     model=schedule | model, callbacks=[points] if curve else [])  # fmt: skip
    seconds = time.perf_counter() - start
    ckpt = run.run_dir / "final.ckpt"
    run.trainer.save_checkpoint(ckpt, weights_only=False)  # the whole checkpoint, as genlit fit writes
    return run, ckpt, points.points, seconds


# %% [markdown]
# ## One speaker held out
# Tiny Shakespeare is a sequence of speeches, each opening with its speaker's name on a line of its own.
# `genlit.data.speakers` puts one speaker's speeches in one file and everyone else's in another (by default the most
# frequent speaker: GLOUCESTER, Richard of Gloucester before he is Richard III, with 3.6% of the text).
# `TextDataModule` then holds out the last 10% of each file for validation, as for any text.

# %%
corpora = write_speaker_corpora(PLAY)
speaker_text = corpora.speaker_path.read_text()
print(f"{corpora.speaker}: {len(speaker_text):,} characters in {speaker_text.count(corpora.speaker + ':')} speeches; "
      f"the others: {corpora.others_path.stat().st_size:,} characters\n")  # fmt: skip
print(speaker_text[:400])

# %% [markdown]
# ## Pre-training on the others
# `experiments/finetune/gpt_others_pretrain.yaml` is the CPU GPT of `gpt_shakespeare_char_cpu.yaml` (4 layers,
# 4 heads, 128 wide, context 64, 0.8 M parameters; AdamW at 1e-3, warm-up and cosine decay) on the others' lines,
# for its 2,000 steps. Its vocabulary holds all 65 characters of the play (GLOUCESTER's lines use 60 of them).

# %%
others = {"source": str(corpora.others_path)}
pretrained, pretrained_ckpt, _, pretrain_seconds = train("gpt_others_pretrain", PRETRAIN_STEPS, others, curve=False)
print(f"{PRETRAIN_STEPS} steps in {pretrain_seconds:.0f} s; vocabulary {pretrained.model.tokenizer.vocab_size} chars")

# %% [markdown]
# ## Fine-tuning against scratch, at equal steps
# Four runs of 300 steps on GLOUCESTER's lines, each scored every 25 steps on his validation text (the same 63
# blocks of 64 characters; the first point is the model before its first step):
#
# - **fine-tuned**: `gpt_speaker_finetune.yaml` with `init_from` the pre-trained checkpoint, every weight training
#   (AdamW at 3e-4, a third of the pre-training rate);
# - **fine-tuned, part frozen**: the same with `freeze: [net.wte.*, net.wpe.*, net.blocks.0.*, net.blocks.1.*]`:
#   the token and position embeddings (the token embedding is also the output head, tied) and the first two of the
#   four blocks keep their pre-trained weights, and the optimizer never sees them;
# - **fine-tuned, LoRA**: `gpt_speaker_lora.yaml`, rank-8 LoRA adapters (Hu et al. 2021,
#   https://arxiv.org/abs/2106.09685; through Hugging Face `peft`) on every Linear of the four blocks, every
#   pre-trained weight frozen (AdamW at 1e-3 on the adapters alone);
# - **from scratch**: `gpt_speaker_scratch.yaml`, the same network and data from a fresh initialization with the
#   pre-training recipe (1e-3).
#
# All four read the text with the pre-trained tokenizer (`tokenizer_from`): the fine-tuned runs need its token
# ids, and so the scratch run is the same network to the last weight.

# %%
his = {"source": str(corpora.speaker_path), "tokenizer_from": str(pretrained_ckpt)}
init = {"init_from": str(pretrained_ckpt)}
frozen = ["net.wte.*", "net.wpe.*", "net.blocks.0.*", "net.blocks.1.*"]
runs = {
    "fine-tuned": train("gpt_speaker_finetune", STEPS, his, **init),
    "fine-tuned, part frozen": train("gpt_speaker_finetune", STEPS, his, **init, freeze=frozen),
    "fine-tuned, LoRA": train("gpt_speaker_lora", STEPS, his, **init),
    "from scratch": train("gpt_speaker_scratch", STEPS, his),
}

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, (_, _, points, _) in runs.items():
    steps, bits = zip(*points, strict=True)
    ax.plot(steps, bits, marker="o", ms=3, label=name)
zero_shot = runs["fine-tuned"][2][0][1]
ax.axhline(zero_shot, color="grey", lw=0.8, ls="--", label="pre-trained, before fine-tuning")
ax.set(xlabel=f"steps on {corpora.speaker}'s lines", ylabel=f"bits per char, {corpora.speaker}'s validation text",
       ylim=(min(b for *_, p, _ in runs.values() for _, b in p) - 0.1, zero_shot + 1.5))  # fmt: skip
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The table adds what each run trains, and its bits per character on the *others'* validation text: what the
# fine-tuning gave up of what the pre-training knew (the pre-trained model's own figures are its first row).


# %%
def bits_per_char(model, text: str, blocks: int | None = None) -> float:
    """The model's bits per character on ``text``: its non-overlapping blocks of 64 characters (the first
    ``blocks`` of them, or all), as genlit evaluate scores a split."""
    ids = torch.tensor(model.tokenizer.encode(text))  # (N,)
    n = min((len(ids) - 1) // 64, blocks or len(ids))
    x, y = ids[: 64 * n].view(n, 64), ids[1 : 64 * n + 1].view(n, 64)  # (n, 64) each
    with torch.no_grad(), model.eval_mode():
        nats = torch.cat([model.token_nll(xs, ys) for xs, ys in zip(x.split(256), y.split(256), strict=True)])
    return (nats.sum() / model.units_of(y).sum()).item() / math.log(2)


his_val, others_val = runs["fine-tuned"][0].datamodule.split_text("val"), pretrained.datamodule.split_text("val")


rows = [("pre-trained (no step on his lines)", pretrained.model, PRETRAIN_STEPS, pretrain_seconds)]
rows += [(name, run.model, run.trainer.global_step, seconds) for name, (run, _, _, seconds) in runs.items()]
table = pd.DataFrame(
    [
        {
            "run": name,
            "steps": steps,
            "seconds": round(seconds),
            "trained parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            f"{corpora.speaker} bpc": bits_per_char(model, his_val),
            "others bpc": bits_per_char(model, others_val, OTHERS_BLOCKS),
        }
        for name, model, steps, seconds in rows
    ]
).set_index("run")
table.round(3)

# %% [markdown]
# Starting from the pre-trained weights is worth far more than the steps: after 300 steps on his lines the scratch
# run (about 3.1 bits per character) is still worse than the pre-trained model before its first step on them
# (about 2.7), and the fine-tuned runs take most of their gain (to about 2.3) in their first 50 steps. At this size
# the three ways of fine-tuning end within a hundredth of a bit of each other on his lines, though the frozen run
# trains half the parameters and the LoRA run 8% of them; those two also give up a little less of the others' text
# (last column: about 2.92 bits against 2.95 fully fine-tuned, from 2.74 before). One run each, on 4,060 validation
# characters. These runs cannot tell learning GLOUCESTER from learning more Shakespeare: a control would continue
# the pre-training on the others' lines for the same 300 steps.
#
# The fine-tuned model, prompted with his name:

# %%
seed = torch.Generator().manual_seed(0)
for name in ("fine-tuned", "from scratch"):
    (text,) = runs[name][0].model.sample(1, prompt=f"{corpora.speaker}:", max_new_tokens=200, generator=seed)
    print(f"=== {name} ===\n{text}\n")

# %% [markdown]
# ## Export
# `genlit export` writes a checkpoint as a folder that anyone can load without running a pickle: `model.safetensors`
# (the weights), `config.json` (the class and hyperparameters that rebuild the model), `tokenizer.json` and a model
# card, `README.md`, in the Hugging Face format. The card's metrics come from a `genlit evaluate` record beside the
# checkpoint (`<checkpoint>.eval.json`, what `genlit evaluate --ckpt` writes by default), written here with
# `genlit.evaluate` on his validation text. The command runs here through `genlit.cli.main`, as `genlit export ...`
# would in a shell.

# %%
finetuned_ckpt = runs["fine-tuned"][1]
record = finetuned_ckpt.with_suffix(".eval.json")
genlit.evaluate(str(finetuned_ckpt), str(corpora.speaker_path), split="val", out=record)
export_dir = runs["fine-tuned"][0].run_dir / f"gpt_{corpora.speaker.lower()}"
genlit_command(["export", "--ckpt", str(finetuned_ckpt), "--out", str(export_dir), "--license", "apache-2.0",
                "--data-license", "public domain (Shakespeare's plays, as Tiny Shakespeare)"])  # fmt: skip
for path in sorted(export_dir.iterdir()):
    print(f"{path.name:<20} {path.stat().st_size:>10,} bytes")

# %%
config = json.loads((export_dir / "config.json").read_text())
print(f"hyper_parameters: {', '.join(config['hyper_parameters'])} (the nets as class_path and init_args)")
print(json.dumps({key: value for key, value in config.items() if key != "hyper_parameters"}, indent=1))

# %%
print((export_dir / "README.md").read_text())

# %% [markdown]
# ## Loading it back
# `genlit.load(DIR)` rebuilds the model from `config.json` (only classes genlit writes are accepted) and loads
# `model.safetensors` and the tokenizer: no pickle, no dataset, no YAML. Sampling is seeded per sample, so the same
# seed gives the same text from the export as from the checkpoint.

# %%
from_export = genlit.load(export_dir)
from_checkpoint = genlit.load(finetuned_ckpt)
draws = {
    name: model.sample(3, prompt=f"{corpora.speaker}:", max_new_tokens=120, generator=torch.Generator().manual_seed(7))
    for name, model in (("export", from_export), ("checkpoint", from_checkpoint))
}
print(f"same samples from the export and the checkpoint: {draws['export'] == draws['checkpoint']}\n")
for text in draws["export"]:
    print(text, end="\n---\n")
