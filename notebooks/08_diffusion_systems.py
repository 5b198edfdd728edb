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
# # 08 · Diffusion systems: samplers against FID, prompts, latent diffusion
# Train three diffusion systems on MNIST for a few minutes each and look at what they offer: one DDPM-trained
# model sampled by six samplers (DDPM, DDIM, Euler, Heun, DPM-Solver++ and its SDE form) at several step counts,
# FID against the number of network evaluations; a text-to-image model prompted with training and held-out
# phrasings at three guidance scales; and a latent diffusion model with the autoencoder under it, its
# reconstructions and its latent space; about 23 minutes on this project's 2-core CPU machine (one thread, the
# other core busy).
#
# Every model is an experiment YAML of `experiments/diffusion/` trained through `genlit.fit` on the 9,000 training
# images of `$GENLIT_DATA_DIR/mnist`, for minutes where the YAMLs give 15: the samples are a young model's, and what
# follows compares samplers, prompts and spaces with each other, not with published figures. The YAMLs' sample
# grids, FID monitors, checkpoints and validation are switched off (the autoencoder keeps its last checkpoint,
# which the latent diffusion model reads).

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import genlit
from genlit.data.captions import caption_digit, caption_for, held_out_captions
from genlit.data.images import to_model_space
from genlit.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler
from genlit.imaging import image_grid, to_uint8

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
MNIST = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
EVALUATOR = "evaluator:mnist_classifier"  # genlit's MNIST classifier: trained once on first use, then cached
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
         "callbacks": [], "limit_val_batches": 0, "max_epochs": -1}  # fmt: skip
STARTED = time.perf_counter()


def train(config: str, minutes: float, smoke_steps: int = 4, **overrides) -> genlit.Run:
    """``genlit.fit`` of an experiment on the local MNIST for ``minutes`` of training (``smoke_steps`` steps in
    smoke mode), without its YAML's callbacks, logger, checkpoints or validation; prints the steps and seconds."""
    start = time.perf_counter()
    seconds = round(minutes * 60)
    clock = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"  # DD:HH:MM:SS
    budget = {"max_steps": smoke_steps, "max_time": None} if SMOKE else {"max_steps": -1, "max_time": clock}
    trainer = {**QUIET, **budget, **overrides.pop("trainer", {})}
    run = genlit.fit(config, trainer=trainer, data={"dataset": MNIST}, **overrides)
    print(f"{config}: {run.trainer.global_step} steps in {time.perf_counter() - start:.0f} s")
    return run


def rows_picture(rows: dict[str, torch.Tensor], title: str, width: float = 8.0) -> None:
    """One row of images (N, C, H, W) in [-1, 1] per entry, its key written on the left."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 0.1 + width / 10 * len(rows) * 1.05), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], rows.items(), strict=True):
        ax.imshow(image_grid(to_uint8(images).numpy(), nrow=len(images))[..., 0], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


# %% [markdown]
# ## 1 · One model, six samplers: FID against network evaluations
# `experiments/diffusion/ddpm_cosine_v_mnist.yaml`: a DDPM (cosine schedule over 1,000 noise levels, v target,
# min-SNR-5 weighting, a 0.72M-parameter U-Net, EMA of the weights). A model trained on the discrete timesteps runs
# under every sampler genlit has: the ancestral DDPM sampler and DDIM walk its timesteps; Euler, Heun (EDM's
# 2nd-order sampler) and DPM-Solver++(2M) integrate the probability-flow ODE over EDM's noise levels
# (ρ = 7, from σ = 80 down), read on this model as its timesteps' σ_t; SDE-DPM-Solver++(2M) (`eta=1`) solves the
# reverse SDE over the same levels, adding fresh noise at each step as DDPM does. An EDM model
# (`experiments/diffusion/edm_mnist.yaml`) takes the last three only: DDPM and DDIM need discrete timesteps.

# %%
SAMPLER_MINUTES = 4.0
pixels = train("experiments/diffusion/ddpm_cosine_v_mnist.yaml", SAMPLER_MINUTES)
model = pixels.model.eval()

# %% [markdown]
# Every sampler starts from the same `NUM` noise images (sample i depends only on the seed and i), and each point
# is the FID of those `NUM` samples against the 1,000 MNIST test images with genlit's evaluator. FID from a few
# hundred samples is biased upwards: compare the points with each other. The x axis counts the network's
# evaluations per sample, measured by counting the U-Net's forward calls: one per step for DDPM, DDIM, Euler and
# DPM-Solver++, two per step but the last for Heun (k steps cost 2k - 1).

# %%
NUM = 16 if SMOKE else 200  # samples per FID
STEPS = [2, 4] if SMOKE else [5, 10, 20, 50]
SAMPLERS = {
    "DDPM": [20] if SMOKE else [1000],  # the ancestral sampler needs its full chain (1,000 evaluations)
    "DDIM": STEPS,
    "Euler": STEPS,
    "Heun": [2, 3] if SMOKE else [3, 5, 10, 18],  # 5, 9, 19 and 35 evaluations
    "DPM-Solver++": STEPS[:-1] if not SMOKE else STEPS,
    "SDE-DPM-Solver++": STEPS[:-1] if not SMOKE else STEPS,
}
MAKE = {"DDPM": DDPMSampler, "DDIM": lambda k: DDIMSampler(k, eta=0.0), "Euler": EulerSampler, "Heun": HeunSampler,
        "DPM-Solver++": DPMSolverSampler, "SDE-DPM-Solver++": lambda k: DPMSolverSampler(k, eta=1.0)}  # fmt: skip

calls = [0]
hook = model.net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
rows, shown = [], {}
try:
    for name, step_counts in SAMPLERS.items():
        for k in step_counts:
            calls[0], start = 0, time.perf_counter()
            images = model.sample_many(range(NUM), seed=0, batch_size=NUM, sampler=MAKE[name](k))  # one batch
            seconds, nfe = time.perf_counter() - start, calls[0]
            metrics = genlit.evaluate(images, MNIST, EVALUATOR, kid_subset_size=min(100, NUM))["metrics"]
            kept = {key: metrics[key] for key in ("fid", "precision", "recall")}
            rows.append({"sampler": name, "steps": k, "NFE": nfe, **kept, "seconds": seconds})
            shown[f"{name}-{k} ({nfe} NFE)"] = images[:10]
finally:
    hook.remove()
samplers = pd.DataFrame(rows)

fig, ax = plt.subplots(figsize=(7, 4))
for name, group in samplers.groupby("sampler", sort=False):
    ax.plot(group["NFE"], group["fid"], marker="o" if len(group) > 1 else "*", markersize=6 if len(group) > 1 else 14,
            label=name)  # fmt: skip
ax.set(xscale="log", yscale="log", xlabel="network evaluations per sample (NFE)", ylabel=f"FID ({NUM} samples)",
       title=f"one DDPM-trained model ({model.global_step} steps), six samplers")  # fmt: skip
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()
samplers.round(3)

# %% [markdown]
# The first ten samples of each sampler at each step count: the same ten noise images throughout, so the
# deterministic samplers (DDIM with η = 0, Euler, Heun, DPM-Solver++) draw the same digits once they have steps
# enough, and DDPM, which adds fresh noise at every step, draws others.

# %%
rows_picture(shown, "the same noise, every sampler and step count", width=7.0)

# %% [markdown]
# ## 2 · Text to image: a prompt grid
# `experiments/diffusion/text2img_mnist.yaml`: the same kind of U-Net with cross-attention at 7x7 to a small
# transformer over the caption's words, trained jointly (a word training never saw reads as `[UNK]`), on
# captions made from the labels in code (`genlit.data.captions`):
# number words, numerals and arithmetic in paraphrases with distractor words about the pen and the style. 10% of
# the captions are dropped to the empty prompt, so one network is also the unconditional model that classifier-free
# guidance mixes: out = out_empty + s (out_prompt - out_empty).

# %%
TEXT_MINUTES = 6.5  # about 1,300 steps here: prompts are followed from about 1,000 steps on
text = train("experiments/diffusion/text2img_mnist.yaml", TEXT_MINUTES)
t2i = text.model.eval()

# %% [markdown]
# Rows: three prompts in the training phrasings, then three in the **held-out** phrasings
# (`genlit.data.captions.HELD_OUT_TEMPLATES`: sentence shapes, distractor words and multiplication that training
# never saw). Columns: guidance scale 1 (the text-conditional model alone), 2 and 4, six samples each from the same
# six noise images. DDIM with 25 steps; guidance above 1 costs two network calls per step.

# %%
SCALES = [1.0, 2.0, 4.0]
PER_CELL = 6
prompts = ["a handwritten three", "the digit 7 written with a thick pen", "four minus one",
           held_out_captions(2)[0], held_out_captions(8)[2], held_out_captions(6)[4]]  # fmt: skip
seen = ["training"] * 3 + ["held-out"] * 3
grid_sampler = DDIMSampler(4 if SMOKE else 25)
fig, axes = plt.subplots(len(prompts), len(SCALES), figsize=(10, 1.15 * len(prompts) + 0.6), squeeze=False)
for r, (prompt, kind) in enumerate(zip(prompts, seen, strict=True)):
    for c, scale in enumerate(SCALES):
        images = t2i.sample_many(range(PER_CELL), seed=1, prompt=prompt, sampler=grid_sampler, guidance_scale=scale)
        axes[r, c].imshow(image_grid(to_uint8(images).numpy(), nrow=PER_CELL)[..., 0], cmap="gray")
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
        if r == 0:
            axes[r, c].set_title(f"guidance {scale:g}")
        if c == 0:
            axes[r, c].set_ylabel(f"{prompt}\n({kind}, {caption_digit(prompt)})", rotation=0, ha="right",
                                  va="center", fontsize=9)  # fmt: skip
fig.tight_layout()
plt.show()

# %% [markdown]
# How often is the digit the prompt names the one drawn? One prompt per digit in each phrasing set (`PER_DIGIT`
# samples of it), the share genlit's evaluator classifies as that digit (10% is chance).

# %%
PER_DIGIT = 2 if SMOKE else 10
accuracy = []
for kind, held_out in (("training", False), ("held-out", True)):
    digit_prompts = [caption_for(d, 100 + d, held_out=held_out) for d in range(10)]
    digits = torch.arange(10).repeat(PER_DIGIT)  # sample i has prompt i % 10
    for scale in SCALES:
        images = t2i.sample_many(range(10 * PER_DIGIT), seed=2, prompt=digit_prompts, sampler=grid_sampler,
                                 guidance_scale=scale)  # fmt: skip
        record = genlit.evaluate(images, MNIST, EVALUATOR, labels=digits, kid_subset_size=10 * PER_DIGIT)
        accuracy.append({"phrasings": kind, "guidance": scale, "label_accuracy": record["metrics"]["label_accuracy"]})
    print(f"{kind}: " + "; ".join(digit_prompts))
pd.DataFrame(accuracy).pivot(index="phrasings", columns="guidance", values="label_accuracy").round(3)

# %% [markdown]
# ## 3 · Latent diffusion: the autoencoder, its latent space, and diffusion in it
# First stage, `experiments/diffusion/autoencoder_mnist.yaml`: a KL autoencoder from 28x28 digits to 3x7x7 latents
# (L1 reconstruction, KL weight 1e-6; its patch discriminator only joins after 2,000 steps, so not in this short
# run). It keeps its last checkpoint: the second stage reads it.

# %%
AE_MINUTES, LDM_MINUTES = 1.5, 2.5
keep_last = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}]
first = train("experiments/diffusion/autoencoder_mnist.yaml", AE_MINUTES,
              trainer={"enable_checkpointing": True, "callbacks": keep_last})  # fmt: skip
ae = first.model.eval()
datamodule = first.datamodule
datamodule.setup("test")
test_uint8, test_labels = datamodule.split_tensors("test", limit=64 if SMOKE else 1000)  # (N, 1, 28, 28), (N,)
x = to_model_space(test_uint8)
with torch.no_grad():
    z = ae.encode(x)  # (N, 3, 7, 7): the posterior means
    recon = ae.decode(z)
print(f"latents {tuple(z.shape[1:])}, std {z.std():.3f}; test L1 {(recon - x).abs().mean():.4f} per pixel in [-1, 1]")
rows_picture({"test digits": x[:12], "reconstructions": recon[:12]}, "784 pixels -> 147 latent numbers -> 784")

# %% [markdown]
# What the 147 numbers look like: for eight test digits, the digit and its three latent channels (7x7 each, one
# colour scale per channel: red positive, blue negative). The latent grid is a coarse, signed picture of the
# digit, which is why a small network can diffuse in it. Then the 1,000 test digits' latents projected onto their
# first two principal components, coloured by the digit: the autoencoder was never told the labels, yet the
# digits already gather in the plane.

# %%
fig, axes = plt.subplots(4, 8, figsize=(10, 5.2))
limits = z.abs().amax(dim=(0, 2, 3))  # (3,): one colour scale per channel
for j in range(8):
    axes[0, j].imshow(x[j, 0], cmap="gray")
    axes[0, j].set_title(str(int(test_labels[j])))
    for ch in range(z.shape[1]):
        axes[ch + 1, j].imshow(z[j, ch], cmap="RdBu_r", vmin=-limits[ch], vmax=limits[ch])
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for ch in range(z.shape[1]):
    axes[ch + 1, 0].set_ylabel(f"channel {ch}")
axes[0, 0].set_ylabel("digit")
fig.suptitle("test digits and their 3x7x7 latents")
fig.tight_layout()
plt.show()

flat = z.flatten(1) - z.flatten(1).mean(0)  # (N, 147) centred
_, s, v = torch.linalg.svd(flat, full_matrices=False)
pcs = (flat @ v[:2].T).numpy()  # (N, 2)
explained = (s[:2] ** 2 / (s**2).sum()).numpy()
fig, ax = plt.subplots(figsize=(6.5, 5.5))
for d in range(10):
    at = (test_labels == d).numpy()
    ax.scatter(pcs[at, 0], pcs[at, 1], s=8, alpha=0.7, color=plt.cm.tab10(d), label=str(d))
    if at.any():
        ax.annotate(str(d), np.median(pcs[at], axis=0), fontsize=16, weight="bold", color=plt.cm.tab10(d))
ax.set(xlabel=f"PC 1 ({explained[0]:.0%} of the variance)", ylabel=f"PC 2 ({explained[1]:.0%})",
       title=f"{len(z)} test latents, first two principal components")  # fmt: skip
ax.legend(markerscale=2, fontsize=8, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# Second stage, `experiments/diffusion/ldm_mnist.yaml`: a DDPM (cosine schedule, v target) whose network is a DiT
# with 1x1 patches (49 tokens, 0.71M parameters), on the frozen autoencoder's latents multiplied by a scale
# measured from the first training batch (1 / their std). Its samples are latents; the model decodes them with the
# autoencoder it holds. Below: DDIM-50 samples, then their FID on `NUM` samples beside the pixel model's DDIM-50
# point of section 1 (the same evaluator, sample count and noise seed; the two models trained for different times).

# %%
latent = train("experiments/diffusion/ldm_mnist.yaml", LDM_MINUTES, model={"autoencoder": str(first.checkpoint)})
ldm = latent.model.eval()
print(f"latent scale {float(ldm.scale):.3f} (1 / std of the first batch's latents)")
ldm_sampler = DDIMSampler(4 if SMOKE else 50)
ldm_images = ldm.sample_many(range(NUM), seed=0, batch_size=NUM, sampler=ldm_sampler)
genlit.show(ldm_images[:64], nrow=8, size=5, title=f"latent diffusion, DDIM-{ldm_sampler.num_steps}, decoded")

# %%
ldm_fid = genlit.evaluate(ldm_images, MNIST, EVALUATOR, kid_subset_size=min(100, NUM))["metrics"]["fid"]
pixel_fid = samplers.query("sampler == 'DDIM'")["fid"].iloc[-1]
print(f"FID ({NUM} samples, DDIM-{SAMPLERS['DDIM'][-1]} / DDIM-{ldm_sampler.num_steps}): "
      f"pixel U-Net {pixel_fid:.1f} after {SAMPLER_MINUTES:g} min, latent DiT {ldm_fid:.1f} after {LDM_MINUTES:g} min "
      f"(+ {AE_MINUTES:g} min of autoencoder)")  # fmt: skip
print(f"the whole notebook: {(time.perf_counter() - STARTED) / 60:.1f} minutes")
