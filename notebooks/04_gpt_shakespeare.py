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
# # 04 · A character-level GPT on Tiny Shakespeare
# Train nanoGPT's CPU recipe, read its loss curves, sample with temperature / top-k / top-p side by side, score
# a held-out passage and look at what one attention head attends to; 3 minutes measured on this project's 2-core
# CPU machine.
#
# `experiments/autoregressive/gpt_shakespeare_char_cpu.yaml` is nanoGPT's CPU configuration (4 layers, 4 heads,
# 128 wide, context 64, batch 12, 2,000 iterations) on `$GENLIT_DATA_DIR/tinyshakespeare/input.txt`.

# %%
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import genlit
from genlit.commands.record import read_metrics

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
STEPS = 30 if SMOKE else 2000
NEW_TOKENS = 40 if SMOKE else 300

run = genlit.fit(
    "experiments/autoregressive/gpt_shakespeare_char_cpu.yaml",
    trainer={"max_steps": STEPS, "val_check_interval": min(250, STEPS), "limit_val_batches": 20 if SMOKE else 200,
             "log_every_n_steps": 10,
             "logger": False, "enable_model_summary": False},
)  # fmt: skip
model, data = run.model.eval(), run.datamodule
run

# %% [markdown]
# ## Loss curves
# The run folder's `metrics.csv` holds every logged value: the training loss every few steps and the
# validation loss and bits per character at every validation. nanoGPT's own run of this recipe reaches a
# validation loss of about 1.89 (its README; 1.90 on the whole validation split).

# %%
metrics = read_metrics(run.run_dir)
train = metrics.dropna(subset=["train/loss"])  # every log_every_n_steps steps
val = metrics.dropna(subset=["val/loss"])
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
left.plot(train["step"], train["train/loss"], alpha=0.5, label="train")
left.plot(val["step"], val["val/loss"], marker="o", label="validation")
left.set(xlabel="step", ylabel="cross-entropy (nats/char)")
left.legend()
right.plot(val["step"], val["val/bits_per_char"], marker="o", color="C1")
right.set(xlabel="step", ylabel="bits per character (validation)")
fig.tight_layout()

# %% [markdown]
# ## Sampling: temperature, top-k, top-p
# The same prompt and the same random stream for every setting (seed 0), so only the rule differs. Low
# temperature repeats the likeliest words; top-k and top-p (nucleus) cut the unlikely tail that produces
# misspellings, at some cost in variety.

# %%
settings = {
    "temperature 0.5": {"temperature": 0.5},
    "temperature 1.0": {"temperature": 1.0},
    "top-k 5": {"top_k": 5},
    "top-p 0.9": {"top_p": 0.9},
}
for name, options in settings.items():
    (text,) = model.sample(1, generator=torch.Generator().manual_seed(0), prompt="ROMEO:\n",
                           max_new_tokens=NEW_TOKENS, **options)  # fmt: skip
    print(f"=== {name} ===\n{text}\n")

# %% [markdown]
# ## Perplexity of a held-out passage
# A passage from the validation text (the last 10% of the file, never trained on): its average negative
# log-likelihood per character, and the perplexity exp(NLL), against a shuffled version of the same characters.


# %%
def nll_per_char(text: str) -> float:
    """Mean next-character NLL (nats) of ``text`` under the model, in windows of its context."""
    ids = torch.tensor(data.tokenizer.encode(text))[None]  # (1, N)
    block = model.hparams.block_size
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ids.shape[1] - 1, block):
            x, y = ids[:, start : start + block], ids[:, start + 1 : start + block + 1]
            x = x[:, : y.shape[1]]
            total += F.cross_entropy(model(x)[0], y[0], reduction="sum").item()
            count += y.numel()
    return total / count


passage = data.split_text("val")[1000:1600]
shuffled = "".join(passage[i] for i in torch.randperm(len(passage), generator=torch.Generator().manual_seed(0)))
for name, text in (("held-out passage", passage), ("its characters shuffled", shuffled)):
    nll = nll_per_char(text)
    print(f"{name:>24}: {nll:.3f} nats/char, perplexity {math.exp(nll):5.2f}, {nll / math.log(2):.2f} bits/char")
print("\n" + passage[:300])

# %% [markdown]
# ## One attention head on one line
# The weights of head 0 in the last layer, recomputed from that layer's query and key projections
# (the net itself calls PyTorch's fused attention, which does not return them). Row i shows how character i
# spreads its attention over characters 0..i.

# %%
line = "ROMEO:\nBut soft, what light through yonder window breaks?"
ids = torch.tensor(data.tokenizer.encode(line))[None]  # (1, T)
captured = {}
last = model.net.blocks[-1]
hook = last.attn.register_forward_hook(lambda mod, args, out: captured.setdefault("x", args[0]))
with torch.no_grad():
    model(ids)
hook.remove()
x = captured["x"]  # (1, T, C): the input of the attention (after the block's first LayerNorm)
b, t, c = x.shape
q, k, _ = last.attn.qkv(x).view(b, t, 3, last.attn.n_head, c // last.attn.n_head).permute(2, 0, 3, 1, 4).unbind(0)
scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (1, nh, T, T)
scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
weights = scores.softmax(-1)[0, 0].detach()  # (T, T), head 0
labels = [repr(ch)[1:-1] for ch in line]
fig, ax = plt.subplots(figsize=(9, 9))
ax.imshow(weights, cmap="viridis")
ax.set_xticks(range(t), labels, fontsize=7)
ax.set_yticks(range(t), labels, fontsize=7)
ax.set_title("last layer, head 0: attention of each character (rows) to earlier ones (columns)")
fig.tight_layout()
