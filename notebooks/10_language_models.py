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
# # 10 · Language models: the 2022 GPT recipe, the modern one, and BERT
# Train a character GPT on Tiny Shakespeare with nanoGPT's 2022 recipe and with the modern one (loss against wall
# time), then a BERT-style masked language model of the same size; compare bits per character, fill masks in
# Shakespeare's lines and generate text by iterative unmasking; 5 minutes measured on this project's 2-core CPU
# machine (one thread, the other core busy).
#
# All three models are the same network, `genlit.nets.gpt.GPT` with 4 layers, 4 heads, 128 wide and a context of
# 64 characters (about 0.8 M parameters), on the same data: `$GENLIT_DATA_DIR/tinyshakespeare/input.txt`, its last
# 10% held out for validation.

# %%
import itertools
import math
import os
import random
import time

import lightning as L
import matplotlib.pyplot as plt
import pandas as pd
import torch

import genlit

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
STEPS = 30 if SMOKE else 2000  # the 2022 GPT recipe and BERT (their YAMLs' own length)
FAST_STEPS = 30 if SMOKE else 800  # the modern recipe (its YAML's own length)
EVERY = 10 if SMOKE else 100  # steps between points of the loss-against-time curves
VAL_BATCHES = 2 if SMOKE else 20  # fixed validation blocks, 12 per batch: 240 blocks of 64 characters in full
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "callbacks": []}


class LossVsTime(L.Callback):
    """Every ``every`` steps: (seconds of training so far, step, mean validation loss on fixed blocks). The clock
    starts when training starts (start-up excluded) and stops while this callback evaluates."""

    def __init__(self, every: int, batches: int) -> None:
        self.every, self.batches, self.points = every, batches, []

    def on_train_start(self, trainer, model) -> None:
        blocks = list(itertools.islice(trainer.datamodule.val_dataloader(), self.batches))
        self.x, self.y = torch.cat([x for x, _ in blocks]), torch.cat([y for _, y in blocks])  # (N, 64) each
        self.start, self.paused = time.perf_counter(), 0.0
        self.measure(trainer, model)

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            self.measure(trainer, model)

    def measure(self, trainer, model) -> None:
        now = time.perf_counter()
        with torch.no_grad(), model.eval_mode():
            loss = model.token_nll(self.x, self.y).mean().item()
        self.points.append((now - self.start - self.paused, trainer.global_step, loss))
        self.paused += time.perf_counter() - now


def train_gpt(config: str, steps: int):
    """``genlit.fit`` of a GPT experiment for ``steps`` steps, validating once at the end on the same blocks the
    curve uses; returns the run and its loss-against-time points."""
    clock = LossVsTime(EVERY, VAL_BATCHES)
    trainer = {**QUIET, "max_steps": steps, "val_check_interval": steps, "limit_val_batches": VAL_BATCHES}
    return genlit.fit(config, trainer=trainer, callbacks=[clock]), clock.points


# %% [markdown]
# ## The 2022 recipe against the modern one
# `experiments/autoregressive/gpt_shakespeare_char_cpu.yaml` is nanoGPT's CPU recipe (2022): GPT-2's block (learned
# positions, LayerNorm, GELU, tied embedding and head), AdamW at 1e-3, warm-up and cosine decay, 2,000 steps of
# 12 blocks. `gpt_shakespeare_char_cpu_fast.yaml` is the same size and data with the modded-nanogpt speedrun's
# choices (below), trained for 800 steps. Both are trained here for their YAMLs' own lengths; a small callback
# (`LossVsTime` above) scores the model every 100 steps on the same 240 validation blocks and notes the seconds of
# training so far.

# %%
old, old_points = train_gpt("experiments/autoregressive/gpt_shakespeare_char_cpu.yaml", STEPS)
new, new_points = train_gpt("experiments/autoregressive/gpt_shakespeare_char_cpu_fast.yaml", FAST_STEPS)
for name, points in (("2022 recipe", old_points), ("modern recipe", new_points)):
    seconds, steps, loss = points[-1]
    print(f"{name:>13}: {steps} steps in {seconds:.0f} s of training ({1000 * seconds / steps:.0f} ms per step), "
          f"validation loss {loss:.3f} nats/char")  # fmt: skip

# %% [markdown]
# Each modern step costs more (Muon's Newton-Schulz iterations, the rotary embeddings), but each step does more:
# the modern recipe passes the 2022 recipe's final loss (dashed) in a fraction of its steps and of its time, and
# ends below it. The dashed line is the 2022 recipe's loss at its last step, on these 240 blocks.

# %%
target = old_points[-1][2]
fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for name, points in (("2022 recipe", old_points), ("modern recipe", new_points)):
    seconds, steps, loss = zip(*points, strict=True)
    by_step.plot(steps, loss, marker="o", ms=3, label=name)
    by_time.plot(seconds, loss, marker="o", ms=3, label=name)
for ax, xlabel in ((by_step, "step"), (by_time, "seconds of training (one CPU thread)")):
    ax.axhline(target, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=xlabel, ylim=(1.4, 3.0))
by_step.set_ylabel("validation loss (nats/char)")
by_time.legend()
fig.tight_layout()
plt.show()
reached = next(((s, step) for s, step, loss in new_points if loss <= target), None)
if reached:
    print(f"the modern recipe reaches {target:.3f} at step {reached[1]}, after {reached[0]:.0f} s "
          f"({reached[0] / old_points[-1][0]:.2f}x the 2022 recipe's {old_points[-1][0]:.0f} s)")  # fmt: skip

# %% [markdown]
# These curves are one run each, scored on 240 of the 1,742 validation blocks, with the clock running only while
# training (not during start-up or these evaluations) on a shared machine. The comparison of whole runs, timed
# from launch to exit and scored on the whole validation split, is `python -m benchmarks.gpt_fast_recipe`
# (`docs/results.md` has its figures).
#
# What the modern recipe changes, each a YAML switch (the net's under `model.init_args.net.init_args`, so any one
# can be tried alone, e.g. `genlit fit --config ..._cpu.yaml --model.init_args.net.init_args.norm rmsnorm`):
#
# - `position: rotary`: rotary position embeddings on queries and keys instead of a learned position table, so
#   attention depends on relative positions (RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864).
# - `norm: rmsnorm`: RMSNorm, LayerNorm without the mean subtraction and bias (Zhang & Sennrich 2019,
#   https://arxiv.org/abs/1910.07467).
# - `qk_norm: true`: each head's queries and keys RMS-normalized before their dot product, which keeps attention
#   logits bounded at high learning rates (Henry et al. 2020, https://arxiv.org/abs/2010.04245).
# - `mlp: relu2`: the squared ReLU in the MLP instead of GELU (Primer, So et al. 2021,
#   https://arxiv.org/abs/2109.08668).
# - `tie_weights: false`: an output head of its own, initialized at zero, instead of sharing the embedding's
#   weight (Press & Wolf 2017, https://arxiv.org/abs/1608.05859, introduced the tying).
# - `logit_softcap: 30.0`: logits capped smoothly at ±30, `30 tanh(logits / 30)` (Gemma 2, Gemma Team 2024,
#   https://arxiv.org/abs/2408.00118).
# - `optimizer: genlit.optim.MuonAdamW`: Muon on the blocks' weight matrices, each update orthogonalized by a few
#   Newton-Schulz iterations, AdamW on the embedding, head and norms (Jordan et al. 2024,
#   https://kellerjordan.github.io/posts/muon/).
# - `lr_scheduler: genlit.optim.WarmupStableDecayLR`: warm-up, a constant rate, then a linear cool-down over the
#   last half (Hägele et al. 2024, https://arxiv.org/abs/2405.18392).
#
# The speedrun that gathered them: modded-nanogpt (Jordan et al. 2024, https://github.com/KellerJordan/modded-nanogpt).

# %% [markdown]
# ## GPT against BERT
# `experiments/masked_lm/bert_shakespeare_char.yaml` trains the same blocks without the causal mask
# (`causal: false`) as a masked language model (`genlit.families.masked_lm.MaskedLM`): in every block 15% of the
# characters are chosen, 80% of those replaced by `[MASK]`, 10% by a random character and 10% left alone, and the
# loss is the cross-entropy of the chosen characters. Same optimizer, schedule and number of steps as the 2022 GPT.

# %%
bert = genlit.fit(
    "experiments/masked_lm/bert_shakespeare_char.yaml",
    trainer={**QUIET, "max_steps": STEPS, "val_check_interval": STEPS, "limit_val_batches": VAL_BATCHES},
)
bert_model = bert.model.eval()
bert

# %% [markdown]
# A GPT's bits per character are its true likelihood: `-log2 p(text)`, split by the chain rule into
# `-log2 p(x_t | x_<t)` per character. A masked LM has no such likelihood; its usual score is the
# **pseudo-log-likelihood** (Salazar et al. 2020, https://arxiv.org/abs/1910.14659): mask each character alone and
# score it with every other character of the block visible, `sum_t log2 p(x_t | x_-t)` (`model.pseudo_nll`, 64
# forwards per block). Both are measured below on the same characters: the targets of the 240 validation blocks.

# %%
blocks = list(itertools.islice(bert.datamodule.val_dataloader(), VAL_BATCHES))
x, y = torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])  # (N, 64): y is x moved on by one
with torch.no_grad():
    rows = [
        ("GPT, 2022 recipe", old.model.eval().token_nll(x, y), "the characters before it"),
        ("GPT, modern recipe", new.model.eval().token_nll(x, y), "the characters before it"),
        ("BERT, pseudo-log-likelihood", bert_model.pseudo_nll(y), "the other 63 of its block"),
    ]  # nats per character (N, 64) of each
rows = [(name, nll.mean().item() / math.log(2), sees) for name, nll, sees in rows]
table = pd.DataFrame(rows, columns=["model", "bits per char", "each character scored seeing"]).set_index("model")
table = table.round(3)
print(f"{y.numel():,} validation characters; genlit's own val/pll_bits_per_char (first "
      f"{bert_model.hparams.pll_blocks} blocks): {bert.metrics['val/pll_bits_per_char']:.3f}")  # fmt: skip
table

# %% [markdown]
# At equal steps the masked LM is the worse model here, by its own score too: each step trains it on the 15% of
# the characters it chose (about 115 of a batch's 768), where the GPT learns from all 768. Trained three times as
# long (outside this notebook: `genlit fit --config experiments/masked_lm/bert_shakespeare_char.yaml
# --trainer.max_steps 6000 --model.init_args.lr_scheduler.init_args.decay_steps 6000`, 6 minutes on one thread),
# its `val/pll_bits_per_char` falls to 1.98, far below the GPT's 2.74 (it passed 2.74 between steps 2,000 and 2,500).
#
# That would not make it the better language model: the pseudo-log-likelihood is not a normalized likelihood. Its
# conditionals `p(x_t | x_-t)` do not chain into one distribution over texts (`2^-PLL` summed over all texts is not
# 1), so it is no code length. Each character is scored with its right-hand side visible, so what neighbouring
# characters tell about each other is counted on both sides: in "that is the question" the GPT pays for the word
# "that" once, at its first letters, and the rest come cheap; in the PLL each letter of "that" is scored seeing
# the other three, and none of them pays for which word it is. Compare masked LMs with each other by PLL and
# autoregressive LMs by bits per character; only the second is a likelihood. `python -m benchmarks.mlm_vs_gpt`
# makes this comparison as a script.

# %% [markdown]
# ## Filling masks
# Top-1 accuracy at masked validation characters: 15% of the characters of the 240 blocks replaced by `[MASK]`
# (seed 0), each predicted from what is left of its block. For scale, the GPTs' top-1 next-character accuracy on the
# same blocks (they see the left side only, all of it unmasked).

# %%
masked = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.15  # (N, 64)
with torch.no_grad():
    guesses = bert_model(x.masked_fill(masked, bert_model.mask_id)).argmax(-1)  # (N, 64)
    next_right = [(run.model(x).argmax(-1) == y).float().mean().item() for run in (old, new)]
print(f"BERT fills {(guesses == x)[masked].float().mean():.1%} of {masked.sum():,} masked characters right "
      f"(genlit's val/mask_accuracy: {bert.metrics['val/mask_accuracy']:.1%}); the GPTs' next character is right "
      f"{next_right[0]:.1%} (2022 recipe) and {next_right[1]:.1%} (modern) of the time")  # fmt: skip

# %% [markdown]
# `model.sample(num, prompt=...)` fills the `[MASK]` tokens of a prompt (one token each; every other character stays
# as it is) over `steps` rounds; temperature 0 takes the most likely character at each, higher temperatures draw.
# The command line does the same: `genlit sample --ckpt RUN/checkpoints/last.ckpt --prompt "To be, or not to
# [MASK][MASK][MASK]"`. After 2,000 steps the model knows the shape of the text (spaces between words, capitals and
# colons after line breaks) better than its words, and the fills show it.

# %%
M = "[MASK]"


def one_line(text: str) -> str:
    """``text`` with its line breaks shown as ``\\n``."""
    return text.replace("\n", "\\n")


for prompt in (f"To be, or not to {M * 3}", f"To be, or not to {M * 3}: that is the {M * 8}."):
    print(prompt)
    print("  most likely:", one_line(bert_model.sample(1, prompt=prompt, temperature=0)[0]))
    for text in bert_model.sample(3, prompt=prompt, generator=torch.Generator().manual_seed(0)):
        print("  drawn:      ", one_line(text))

# %% [markdown]
# Lines from the validation text (never trained on), one word of each masked (`_` marks its characters), filled with
# the most likely characters (`\n`: a line break):

# %%
pick = random.Random(0)
lines = [line for line in bert.datamodule.split_text("val").splitlines() if 30 <= len(line) <= 64]
for line in pick.sample(lines, 6):
    words = [w for w in line.split() if len(w) >= 4 and w.isalpha()] or line.split()
    word = pick.choice(words)
    start = line.index(word)
    prompt = line[:start] + M * len(word) + line[start + len(word) :]
    (filled,) = bert_model.sample(1, prompt=prompt, temperature=0, steps=len(word))
    print(f"masked:   {prompt.replace(M, '_')}\nfilled:   {one_line(filled)}\noriginal: {line}\n")

# %% [markdown]
# ## Generating from masks alone
# With no prompt, `length` masks are filled from nothing: each round predicts every masked position, draws a
# character for each and commits the most confident ones (MaskGIT's cosine schedule, Chang et al. 2022,
# https://arxiv.org/abs/2202.04200), so later rounds condition on earlier ones. With 8 rounds, characters committed
# in the same round are drawn independently of each other; with 64, one character per round, each sees every
# character committed before it. Committing the most confident first favours the characters that are likely
# anywhere (newlines, colons, the capitals of speakers' names), and an undertrained model's drawings fill up with
# them. Below, three drawings at each (seed 0), and the 2022 GPT's continuations of a newline for comparison.

# %%
for steps in (8, 64):
    print(f"=== BERT, 64 characters in {steps} rounds ===")
    for text in bert_model.sample(3, generator=torch.Generator().manual_seed(0), length=64, steps=steps):
        print(text, end="\n---\n")
print("=== 2022 GPT, 64 characters after a newline ===")
for text in old.model.sample(3, generator=torch.Generator().manual_seed(0), max_new_tokens=64):
    print(text.strip("\n"), end="\n---\n")
