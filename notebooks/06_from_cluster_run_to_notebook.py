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
# # 06 · From a cluster run to a notebook
# Open run folders that `genlit fit` wrote on the command line (as a cluster job would), list and compare them
# with `genlit.runs` and `genlit.plot`, sample from a run's checkpoint and score the runs alike; 5 minutes measured
# on this project's 2-core CPU machine.
#
# A cluster job leaves everything in its run folder: `config.yaml`, `checkpoints/`, `metrics.csv` (every logged
# value, no W&B account needed) and `metrics.png`. Copy the folder (or mount the cluster's file system) and a
# notebook can pick it up. Here two short command-line runs stand in for the cluster's: the MNIST VAE and the
# β-VAE (β = 4), the same network with a heavier KL weight.

# %%
import os
import subprocess
import sys

import pandas as pd
import torch
from IPython.display import display

import genlit
from genlit.api import REPO

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
STEPS = 6 if SMOKE else 1500
ROOT = "runs/cluster"  # where the "cluster" runs go (relative to this notebook's folder)
MNIST = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")

for experiment in ("vae_mnist", "beta_vae_mnist"):
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", f"{REPO}/experiments/vae/{experiment}.yaml",
               "--data.init_args.dataset", MNIST, "--trainer.max_steps", str(STEPS), "--trainer.logger", "false",
               "--trainer.default_root_dir", f"{ROOT}/{experiment}", "--trainer.enable_progress_bar", "false",
               "--trainer.val_check_interval", str(min(STEPS, 250)), "--trainer.check_val_every_n_epoch", "null",
               "--trainer.limit_val_batches", "2" if SMOKE else "10"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    print(experiment, "exit code", done.returncode, done.stderr[-2000:] if done.returncode else "")

# %% [markdown]
# ## Every run under a folder, as a table
# One row per run folder (found at any depth): experiment, family, start, steps, and for each validation metric
# its final and best value.

# %%
table = genlit.runs(ROOT)
table.drop(columns=["path"])

# %% [markdown]
# ## Compare the runs' curves
# `genlit.plot` draws the family's panels (for a VAE: the ELBO terms and the KL) for several runs on shared axes;
# the same figure as `genlit plot RUN_DIR RUN_DIR` on the command line.

# %%
genlit.plot(table["path"].tolist())

# %% [markdown]
# ## Sample from a run's checkpoint
# `genlit.load` takes a run folder (its newest checkpoint) or a checkpoint file; it loads with
# `weights_only=True`, so a checkpoint from elsewhere cannot run code. (Families that keep an EMA of their
# weights, the GANs and diffusion models, sample from it; the VAEs keep none.)

# %%
for path, experiment in zip(table["path"], table["experiment"], strict=True):
    model = genlit.load(path)
    samples = model.sample(64, generator=torch.Generator().manual_seed(0))
    display(genlit.show(samples, nrow=8, title=experiment))

# %% [markdown]
# ## Score the runs alike
# `genlit.evaluate` draws samples from each run's checkpoint under the same seed and scores them against the MNIST
# test images with genlit's evaluator; `nll=False` skips the test NLL (`genlit test` reports it). The β-VAE's
# heavier KL weight (its KL term above is less than half the VAE's) costs reconstruction, and its samples cover
# less of the data: a worse FID and a much lower recall, at about the same precision.

# %%
scores = {
    experiment: genlit.evaluate(path, MNIST, "evaluator:mnist_classifier", num=100 if SMOKE else 2000, nll=False)
    for path, experiment in zip(table["path"], table["experiment"], strict=True)
}
pd.DataFrame({name: record["metrics"] for name, record in scores.items()}).round(4)
