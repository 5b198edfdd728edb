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
# # 09 · Exact-likelihood and discrete-latent models, and anomaly detection
# A PixelCNN and a Glow flow (exact likelihoods: test bits per dimension and samples) and a VQ-VAE (a discrete latent:
# reconstructions), each trained for about a minute; then a VAE trained without the digit 9 and a background VAE
# trained on mutated digits, scoring the test digits with four anomaly scores (likelihood, likelihood ratio, input
# complexity, reconstruction error) and comparing them by their ROC curves; 5 minutes measured on this project's
# 2-core CPU machine (one thread, the other core busy).
#
# Every model is an experiment YAML of `experiments/` trained through `genlit.fit` on the 9,000 training images of
# `$GENLIT_DATA_DIR/mnist` (5% of them held out for validation, which these short runs skip); every score is
# measured on its 1,000 test images. The runs are short, far from the YAMLs' own budgets: what follows shows what
# each family offers and how the anomaly scores behave, not how good each family can get.

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

import genlit
from genlit.data.images import to_model_space

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
PIXELCNN_STEPS = 3 if SMOKE else 70  # about a minute each on one thread (a PixelCNN step is the dearest)
FLOW_STEPS = 3 if SMOKE else 700
VQVAE_STEPS = 3 if SMOKE else 600
VAE_STEPS = 5 if SMOKE else 900  # the anomaly VAE and its background, each
NUM_TEST = 64 if SMOKE else 500  # test images of the likelihood figures
K = 2 if SMOKE else 25  # importance samples of the VAE's likelihood bound (the YAML's 100 cost 4x as long)
MNIST = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
         "callbacks": [], "limit_val_batches": 0, "max_epochs": -1, "max_time": None}  # fmt: skip


def train(config: str, steps: int, data: dict | None = None, **overrides) -> genlit.Run:
    """``genlit.fit`` of an experiment on the local MNIST for ``steps`` steps, without its YAML's callbacks
    (sample grids, FID monitors), logger, checkpoints or validation; prints the steps and seconds it took."""
    start = time.perf_counter()
    trainer = {**QUIET, "max_steps": steps, **overrides.pop("trainer", {})}
    run = genlit.fit(config, trainer=trainer, data={"dataset": MNIST, **(data or {})}, **overrides)
    print(f"{config}: {run.trainer.global_step} steps in {time.perf_counter() - start:.0f} s")
    return run


def test_images(datamodule, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` test images in model space (N, 1, 28, 28) in [-1, 1], and their labels (N,)."""
    datamodule.setup("test")
    images, labels = datamodule.split_tensors("test", limit=limit)  # uint8 (N, 1, 28, 28), int64 (N,)
    return to_model_space(images), labels


def test_nll(model, x: torch.Tensor) -> torch.Tensor:
    """The model's NLL in nats per image (N,) of model-space images x, 100 at a time (batch index i seeds each
    chunk's binarization or dequantization, as `genlit test` does)."""
    with torch.no_grad():
        return torch.cat([model.nll(chunk, batch_idx=i) for i, chunk in enumerate(x.split(100))])


# %% [markdown]
# ## PixelCNN: an exact likelihood, pixel by pixel
# `experiments/pixelcnn/pixelcnn_mnist_binary.yaml` is a gated PixelCNN (van den Oord et al. 2016) over binarized
# MNIST: each pixel is a Bernoulli variable given the pixels above it and to its left, so
# `log p(x) = sum_t log p(x_t | x_<t)` is exact, computed in one pass of the net. `model.nll(x)` gives it in nats per
# image (the test images binarized with a fixed seed per batch, `batch_idx`), `model.bits_per_dim` in bits per
# pixel. Sampling has no such shortcut: 784 pixels, one after the other; the `stacks` cache reruns only the part of
# the net that the next pixel needs.

# %%
pixelcnn = train("experiments/pixelcnn/pixelcnn_mnist_binary.yaml", PIXELCNN_STEPS)
pixel_model = pixelcnn.model.eval()
x, _ = test_images(pixelcnn.datamodule, NUM_TEST)
nll = test_nll(pixel_model, x)  # (N,) nats
print(f"PixelCNN on {len(x)} binarized test images: NLL {nll.mean():.1f} nats per image, "
      f"{pixel_model.bits_per_dim(nll.mean()):.3f} bits per pixel")  # fmt: skip
start = time.perf_counter()
samples = pixel_model.sample(4 if SMOKE else 32, generator=torch.Generator().manual_seed(0), cache="stacks")
print(f"{len(samples)} samples in {time.perf_counter() - start:.1f} s")
genlit.show(samples, nrow=16, size=10)

# %% [markdown]
# These few steps give strokes rather than digits: the likelihood rewards the local texture (ink next to ink,
# black background) first. The YAML's own 15 minutes on 2 cores do better (`docs/results.md`), and the digits'
# shapes come with longer training still.

# %% [markdown]
# ## Glow: an exact likelihood through an invertible net
# `experiments/flow/glow_mnist.yaml` is a multi-scale Glow (Kingma & Dhariwal 2018: actnorm, LU-decomposed 1x1
# convolutions, affine couplings) on the 8-bit grey levels, not binarized. The levels are dequantized with uniform
# noise and every change of variables is counted, so `model.nll(x)` is a bound on the discrete NLL in nats per image
# (`batch_idx` seeds the noise) and `model.bits_per_dim` turns it into bits per 8-bit pixel, the unit of the
# literature's image likelihoods. These bits are not comparable with the PixelCNN's above: there each pixel was one
# binary value, here it is one of 256. Samples are Gaussian noise through the inverse net; a temperature below 1
# (Glow's 0.7) shrinks the noise and trades diversity for cleaner images.

# %%
flow = train("experiments/flow/glow_mnist.yaml", FLOW_STEPS)
flow_model = flow.model.eval()
x, _ = test_images(flow.datamodule, NUM_TEST)
nll = test_nll(flow_model, x)  # (N,) nats
print(f"Glow on {len(x)} 8-bit test images: NLL {nll.mean():.0f} nats per image, "
      f"{flow_model.bits_per_dim(nll.mean()):.3f} bits per dimension")  # fmt: skip
samples = torch.cat([flow_model.sample(16, generator=torch.Generator().manual_seed(0), temperature=t)
                     for t in (1.0, 0.7)])  # fmt: skip
genlit.show(samples, nrow=16, size=10, title="temperature 1.0 (top) and 0.7 (bottom), the same noise")

# %% [markdown]
# After these steps the samples are blurred, digit-like shapes; some at temperature 1 are scattered speckles, and the
# same noise at 0.7 gives smoother, fainter versions of the same shapes. The flow's bits per dimension fall slowly and
# for long: the YAML's own budget is 15 minutes on 2 cores.

# %% [markdown]
# ## VQ-VAE: a discrete latent
# `experiments/vqvae/vqvae_mnist.yaml` encodes each 28x28 image into a 7x7 grid of codes, each one of 256 learned
# vectors (van den Oord et al. 2017), and decodes the grid back. It is trained to reconstruct, with no likelihood of
# its own: `model.reconstruct(x)` goes through the bottleneck, `model.encode_codes(x)` gives the grid. Samples need a
# prior over the code grids, trained afterwards on the codes of the training images (`genlit encode`, then
# `experiments/vqvae/vqvae_prior_mnist.yaml`, then `genlit sample --ckpt VQVAE --prior PRIOR`); without one,
# `model.sample` decodes uniformly random codes (and warns), so this notebook shows reconstructions only.

# %%
vqvae = train("experiments/vqvae/vqvae_mnist.yaml", VQVAE_STEPS)
vq_model = vqvae.model.eval()
x, _ = test_images(vqvae.datamodule, NUM_TEST)
with torch.no_grad():
    recon = vq_model.reconstruct(x)  # (N, 1, 28, 28) in [-1, 1]
    codes = vq_model.encode_codes(x)  # (N, 7, 7) in 0..255
mse = ((recon - x) / 2).square().mean()  # per pixel, in [0, 1] units (the family's val/mse)
print(f"VQ-VAE on {len(x)} test images: reconstruction MSE {mse:.4f} per pixel ([0, 1] units); "
      f"{codes.unique().numel()} of {vq_model.num_codes} codes in use")  # fmt: skip
print("the code grid of the first test image:\n", codes[0].numpy())
genlit.show(torch.cat([x[:16], recon[:16]]), nrow=16, size=10, title="test images (top), reconstructions (bottom)")

# %% [markdown]
# ## Anomaly detection: a VAE that never saw a 9
# `experiments/vae/vae_anomaly_mnist.yaml` trains a VAE (32 latent dimensions, Bernoulli pixels) on the training
# images without the digit 9 (`held_out_classes: [9]`); the test split keeps its 9s. A model of "normal" digits
# should find the 9s unlikely. The **background** model for the likelihood ratio (Ren et al. 2019,
# https://arxiv.org/abs/1906.02845) is the same config trained on mutated inputs (`mutation_rate: 0.2`: a fifth of
# each training image's pixels replaced by random values, afresh every step), so it learns the population's
# low-level statistics and little of the digits' shapes. Both train for the same steps; the background's checkpoint
# is what the model is given as `anomaly_background`.

# %%
anomaly_run = train("experiments/vae/vae_anomaly_mnist.yaml", VAE_STEPS, model={"iw_samples": K})
background_run = train("experiments/vae/vae_anomaly_mnist.yaml", VAE_STEPS, data={"mutation_rate": 0.2},
                       model={"iw_samples": K})  # fmt: skip
background_ckpt = background_run.run_dir / "background.ckpt"
background_run.trainer.save_checkpoint(background_ckpt, weights_only=True)
vae = anomaly_run.model.eval()
vae.hparams.anomaly_background = str(background_ckpt)  # as `genlit test --model.anomaly_background PATH` sets it
print("the background:", background_ckpt)

# %% [markdown]
# `model.anomaly_scores(x, batch_idx=i)` gives every score of a batch, each per example, higher = more anomalous, in
# bits (or squared error) per pixel (`genlit/metrics/anomaly.py`):
#
# - `nll`: the negative log-likelihood, here the VAE's importance-weighted bound with `iw_samples` samples;
# - `likelihood_ratio`: the model's NLL minus the background's (Ren et al. 2019);
# - `complexity`: the NLL in bits minus the image's length as a PNG file (Serra et al. 2020,
#   https://arxiv.org/abs/1909.11480): a generic compressor's code length stands in for the background;
# - `reconstruction`: the squared error of the VAE's reconstruction of the image.
#
# Pixels are binarized with a seed per batch (`batch_idx`) and the model and its background score the same binary
# image; batches of the test loader's size give the very scores of `genlit test` (below).

# %%
data = anomaly_run.datamodule
x, labels = test_images(data)  # all 1,000 test images, 9s included
start = time.perf_counter()
with torch.no_grad():
    parts = [vae.anomaly_scores(chunk, batch_idx=i) for i, chunk in enumerate(x.split(data.hparams.batch_size))]
scores = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}  # name -> (1000,)
is_nine = (labels == 9).long()
print(f"{len(x)} test images ({int(is_nine.sum())} nines) scored in {time.perf_counter() - start:.0f} s")
pd.DataFrame({name: s.numpy() for name, s in scores.items()}).describe().loc[["mean", "std", "min", "max"]].round(4)

# %% [markdown]
# ## ROC curves
# Each curve sweeps a threshold over one score: the share of 9s flagged (true positive rate) against the share of
# other digits flagged (false positive rate). The area under it (AUROC) is the chance that a random 9 scores higher
# than a random other digit: 1 is a perfect detector, 0.5 (the grey diagonal) no better than chance.

# %%
aurocs = {}
fig, ax = plt.subplots(figsize=(5.5, 5))
for name, score in scores.items():
    ranked = (score - score.min()) / (score.max() - score.min())  # into [0, 1]: torchmetrics reads others as logits
    fpr, tpr, _ = binary_roc(ranked, is_nine)
    aurocs[name] = float(binary_auroc(ranked, is_nine))
    ax.plot(fpr, tpr, label=f"{name}: AUROC {aurocs[name]:.3f}")
ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
ax.set(xlabel="false positive rate (digits 0-8 flagged)", ylabel="true positive rate (9s flagged)",
       title=f"9 against 0-8: VAE after {VAE_STEPS} steps")  # fmt: skip
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()
nines, others = int(is_nine.sum()), int((1 - is_nine).sum())
chance = math.sqrt((nines + others + 1) / (12 * nines * others))  # the AUROC's standard error if the score is blind
print({name: round(value, 3) for name, value in aurocs.items()})
print(f"{nines} nines against {others} other digits: a score blind to the digit gives 0.5 +- {chance:.3f}")

# %% [markdown]
# The held-out 9 is a hard digit to flag: a 9 is a 4 with its top closed, or a 7 with a loop, and a model of the
# other digits codes it about as cheaply as them. Below the AUROCs is printed the standard error of the AUROC of a
# score blind to the digit, on this many 9s and other digits (Hanley & McNeil 1982): an AUROC within about twice
# that of 0.5 is no evidence that the score sees the 9s at all. This is one run of a briefly trained model; the
# YAML's own 5-minute run (`docs/results.md`) reports its `nll` AUROC too. `python -m benchmarks.anomaly_digits`
# repeats the whole experiment (model, background, `genlit test`) holding out each digit in turn.

# %% [markdown]
# ## The best score: 9s against the rest
# The distribution of the score with the highest AUROC above, for the 9s and for the digits the model was trained
# on. Where the two overlap, no threshold separates them. (Choosing the best score on the same test images flatters
# it a little: with real anomalies, choose on held-out data.)

# %%
best = max(aurocs, key=aurocs.get)
score = scores[best]
bins = np.linspace(float(score.quantile(0.005)), float(score.quantile(0.995)), 40)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(score[is_nine == 0], bins=bins, alpha=0.6, density=True, label="digits 0-8 (trained on)")
ax.hist(score[is_nine == 1], bins=bins, alpha=0.6, density=True, label="9 (held out)")
ax.set(xlabel=f"{best} score (higher = more anomalous)", ylabel="density", title=f"AUROC {aurocs[best]:.3f}")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What each score ranks
# The median of each score per digit. Read down a column: the digits a score calls most normal have the lowest
# medians. The likelihood (`nll`) ranks the digits by how cheaply they are coded (a 1 is a few strokes of ink,
# cheap whatever the model was trained on; Nalisnick et al. 2019, https://arxiv.org/abs/1810.09136); the likelihood
# ratio and the complexity score subtract an estimate of that cheapness (the background's code length, the PNG's) and
# rank what is left, so the digits they call most normal (printed above the table) need not be the likelihood's.

# %%
medians = pd.DataFrame({name: [float(s[labels == d].median()) for d in range(10)] for name, s in scores.items()})
medians.index.name = "digit"
for name in medians:
    print(f"{name:>16}: most normal digit {medians[name].idxmin()}, most anomalous {medians[name].idxmax()}")
medians.round(4)

# %% [markdown]
# ## The same AUROCs from `genlit test`
# `genlit test` on a DataModule with `held_out_classes` logs `test/anomaly_auroc_<score>` for every score the model
# gives: on the command line `genlit test --config experiments/vae/vae_anomaly_mnist.yaml --ckpt_path MODEL.ckpt
# --model.anomaly_background BACKGROUND.ckpt` (and `--data.dataset`). Here the run's own trainer tests the model with
# the background set above; its test loader's batches are the ones scored above, so the AUROCs are the same numbers.

# %%
(tested,) = anomaly_run.trainer.test(vae, datamodule=data, verbose=False)
pd.DataFrame({"genlit test": {k: v for k, v in tested.items() if "anomaly" in k},
              "this notebook": {f"test/anomaly_auroc_{k}": v for k, v in aurocs.items()}}).round(4)  # fmt: skip

# %% [markdown]
# Any file of images can be scored the same way from the command line: `genlit evaluate --ckpt MODEL.ckpt --anomaly
# images.npz --background BACKGROUND.ckpt --anomalous-classes '[9]'` reads the images (`arr_0`, uint8 (N, H, W, C),
# the evaluation convention) and their labels (`arr_1`), writes every image's scores to `images.scores.npz` and,
# with the classes to call anomalous, each score's AUROC to the JSON record beside it.
