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
# # 01 · Quickstart: a GAN learns the 8-Gaussian ring
# Train genlit's toy GAN from Python, watch its samples move onto the eight modes and its mode coverage rise;
# 2 minutes measured on this project's 2-core CPU machine.
#
# The ring of eight Gaussians (Metz et al. 2017) is the classic mode-collapse test: a generator that covers
# all eight modes with sharp samples is a working GAN. `genlit.fit` runs `experiments/gan/toy_ring8.yaml`
# exactly as `genlit fit --config ...` would, with overrides as keyword arguments, and returns the run.

# %%
import os

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch

import genlit
from genlit.commands.record import read_metrics
from genlit.data.toy import toy_centers

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
STEPS = 40 if SMOKE else 12_000  # optimizer steps: a D and a G step per batch
EVERY = 10 if SMOKE else 1_000  # validation (mode coverage) every this many batches


# %% [markdown]
# A Lightning callback defined right here keeps 1,000 samples from the same noise at every validation,
# so we can watch the same points travel. `genlit.fit` adds it to the callbacks of the YAML.


# %%
class Snapshots(L.Callback):
    """Samples from fixed noise (seed 0) at every validation, keyed by the training batches seen so far."""

    def __init__(self, num: int = 1000) -> None:
        self.num, self.samples, self.batches = num, {}, 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.samples[self.batches] = pl_module.sample_many(range(self.num), seed=0).cpu()


snapshots = Snapshots()
run = genlit.fit(
    "experiments/gan/toy_ring8.yaml",
    trainer={"max_steps": STEPS, "val_check_interval": EVERY, "logger": False, "enable_model_summary": False},
    callbacks=[snapshots],
)
run

# %% [markdown]
# ## Samples moving onto the modes
# Grey crosses are the eight mode centres; each panel is the same 1,000 noise vectors at a later step. Steps
# count training batches here and in the curves below; each batch is a D and a G step, so `max_steps`, which
# counts optimizer steps, is twice the last of them.

# %%
centers = toy_centers("ring8")
steps = sorted(snapshots.samples)
shown = steps[:: max(1, len(steps) // 6)][:6]
fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.8), sharex=True, sharey=True)
for ax, step in zip(np.atleast_1d(axes), shown, strict=True):
    points = snapshots.samples[step]
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4)
    ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="grey")
    ax.set_title(f"step {step:,}")
    ax.set_aspect("equal")
fig.tight_layout()

# %% [markdown]
# ## Mode coverage over time
# `ToyModeMetrics` (in the YAML) counts, at every validation, the modes that received a high-quality sample
# (within 3 standard deviations) and the share of such samples. The run folder keeps every logged value in
# `metrics.csv`; `read_metrics` gives it as a DataFrame.

# %%
metrics = read_metrics(run.run_dir)
val = metrics.dropna(subset=["val/modes_covered"])
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
left.plot(val["step"], val["val/modes_covered"], marker="o")
left.set(xlabel="step (batches)", ylabel="modes covered (of 8)", ylim=(0, 8.5))
right.plot(val["step"], val["val/high_quality_fraction"], marker="o", color="C1")
right.set(xlabel="step (batches)", ylabel="high-quality samples", ylim=(0, 1.05))
fig.tight_layout()

# %% [markdown]
# ## The trained generator
# `run.model` is the trained LightningModule; `sample` draws from its EMA generator. `genlit.show` draws 2-D
# samples as a scatter (images as a grid, texts printed).

# %%
genlit.show(run.model.sample(2500, generator=torch.Generator().manual_seed(1)), title="2,500 samples, EMA generator")

# %% [markdown]
# The run folder holds everything the command line would have written: `config.yaml` (re-run it with
# `genlit fit --config <run>/config.yaml`), `checkpoints/last.ckpt` (`genlit.load(run.run_dir)` gives the model
# back), `metrics.csv` and the curves `metrics.png`.

# %%
print(run.run_dir)
print(sorted(p.name for p in run.run_dir.iterdir()))
