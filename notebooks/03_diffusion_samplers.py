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
# # 03 · Diffusion samplers, step counts and guidance on MNIST
# Train a class-conditional diffusion model, then plot FID against the sampler and its number of steps, label
# accuracy and FID against the guidance scale, and the denoising trajectory of a few samples as a strip; 26 minutes
# measured on this project's 2-core CPU machine (10 of them training, 3.5 training genlit's MNIST evaluator on
# first use).
#
# `experiments/diffusion/cfg_mnist.yaml` is a DDPM (ε target, linear schedule, 1,000 noise levels, a 0.7M-parameter
# U-Net, EMA of the weights) trained with 10% of its labels dropped, so one network is both the conditional and the
# unconditional model that classifier-free guidance mixes. Its YAML trains for 15 minutes; here 10.

# %%
import os
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

import genlit
from genlit.diffusion import DDIMSampler, DDPMSampler

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
MNIST = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
EVALUATOR = "evaluator:mnist_classifier"  # genlit's MNIST classifier: trained once on first use, then cached
NUM = 24 if SMOKE else 300  # samples per FID (the same noise for every sampler)
STEP_COUNTS = [2, 4] if SMOKE else [10, 25, 50, 100]

budget = {"max_steps": 6, "max_time": None, "limit_val_batches": 1} if SMOKE else {"max_time": "00:00:10:00"}
run = genlit.fit(
    "experiments/diffusion/cfg_mnist.yaml",
    data={"dataset": MNIST},
    trainer={**budget, "logger": False, "enable_model_summary": False,
             # the YAML's val/fid monitor and sample grids cost minutes of the ten; this notebook measures its own
             "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {"save_last": True}}]},
)  # fmt: skip
model = run.model.eval()
run

# %% [markdown]
# ## Sampler and number of steps against FID
# Each point is `NUM` samples (the same starting noise, one label per sample, balanced over the digits) scored
# against the 1,000 MNIST test images with genlit's evaluator. DDIM with η = 0 is deterministic (the
# probability-flow ODE); DDPM is the ancestral sampler on a respaced subset of the 1,000 noise levels. The sweep
# uses the conditional model without guidance (scale 1), which costs one network call per step instead of two.
# FID from a few hundred samples is biased upwards, so compare these points with each other, not with published
# figures (notebook 05 shows how FID moves with the number of samples).
#
# What to look for: after ten minutes of training (about 1,100 steps) the deterministic DDIM is far behind the
# ancestral DDPM at every step count. Its samples keep grey, speckled backgrounds and broken strokes: the ODE
# follows the young model's errors, where the fresh noise of each DDPM step washes them out (the trajectory strip
# below shows DDIM's backgrounds). More steps help both, and the gap closes with training: on the 30-minute
# checkpoint of the results page DDIM-50 comes within 4% of DDPM-1000.


# %%
def measure(**options) -> dict:
    start = time.perf_counter()
    record = genlit.evaluate(model, MNIST, EVALUATOR, num=NUM, nll=False, **options)
    return record["metrics"] | {"seconds": time.perf_counter() - start}


rows = []
for steps in STEP_COUNTS:
    for name, sampler in [("DDIM", DDIMSampler(num_steps=steps)), ("DDPM", DDPMSampler(num_steps=steps))]:
        rows.append({"sampler": name, "steps": steps} | measure(sampler=sampler, guidance_scale=1.0))
samplers = pd.DataFrame(rows)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
for name, group in samplers.groupby("sampler"):
    left.plot(group["steps"], group["fid"], marker="o", label=name)
    right.plot(group["steps"], group["precision"], marker="o", label=f"{name} precision")
    right.plot(group["steps"], group["recall"], marker="s", linestyle="--", label=f"{name} recall")
left.set(xscale="log", xlabel="sampling steps (network calls)", ylabel=f"FID ({NUM} samples)", title="FID")
right.set(xscale="log", xlabel="sampling steps", ylabel="", title="precision and recall")
left.legend()
right.legend(fontsize=8)
fig.tight_layout()
samplers[["sampler", "steps", "fid", "precision", "recall", "label_accuracy", "seconds"]].round(3)

# %% [markdown]
# ## Guidance scale against label accuracy and FID
# Classifier-free guidance mixes the two predictions as ε = ε_uncond + s (ε_cond − ε_uncond): scale 0 is the
# unconditional model (the labels are ignored, so about a tenth of the samples match theirs by chance), 1 the
# conditional one, and larger scales push samples towards what the classifier inside the model finds most
# typical of the digit. Label accuracy is the share of samples genlit's evaluator assigns to the requested
# digit. DDIM with 25 steps throughout: guidance lifts it from chance to about 80% and brings FID down, until
# at the largest scale FID rises again and recall keeps falling, the samples crowding onto fewer styles of each
# digit (the diversity guidance trades away).

# %%
scales = [0.0, 1.0, 3.0] if SMOKE else [0.0, 1.0, 2.0, 3.0, 5.0, 8.0]
guided = pd.DataFrame(
    [{"scale": s} | measure(sampler=DDIMSampler(num_steps=STEP_COUNTS[1]), guidance_scale=s) for s in scales]
)
fig, left = plt.subplots(figsize=(6, 3.5))
left.plot(guided["scale"], guided["label_accuracy"], marker="o", color="tab:green")
left.set(xlabel="guidance scale", ylabel="label accuracy", ylim=(0, 1.02))
right = left.twinx()
right.plot(guided["scale"], guided["fid"], marker="s", color="tab:red")
right.set_ylabel("FID", color="tab:red")
left.set_title("guidance: the requested digit, at the cost of diversity")
fig.tight_layout()
guided[["scale", "label_accuracy", "fid", "precision", "recall", "seconds"]].round(3)

# %% [markdown]
# ## The denoising trajectory
# Six samples, one per row (digits 0 to 5), DDIM with 50 steps at the model's guidance scale 3, with the EMA
# weights the model samples with. Left to right, every fifth step from pure noise: top strip the state x_t the
# sampler holds, bottom strip the network's estimate of the clean image x̂₀ at that step. The estimate settles on
# the digit's shape early; the state only looks like it in the last third.

# %%
labels = torch.arange(6)
sampler = DDIMSampler(num_steps=10 if SMOKE else 50)
states, estimates = [], []


def keep(step: dict) -> None:
    if step["i"] % 5 == 4 or step["i"] == 0:
        states.append(step["x"].clamp(-1, 1))
        estimates.append(step["denoised"].clamp(-1, 1))


noise = torch.randn(6, *model.latent_shape, generator=torch.Generator().manual_seed(0))
with torch.no_grad(), model.ema_weights():
    sampler.sample(model.denoiser(labels, model.hparams.guidance_scale), noise, model.schedule, callback=keep)


def by_row(frames: list[torch.Tensor]) -> torch.Tensor:
    """(6 * columns, 1, 28, 28): one row per sample, one column per kept step."""
    return torch.stack(frames, 1).flatten(0, 1)


genlit.show(by_row(states), nrow=len(states), size=8, title="x_t")

# %%
genlit.show(by_row(estimates), nrow=len(estimates), size=8, title="the network's estimate of x_0")
