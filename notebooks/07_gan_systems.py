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
# # 07 · GAN systems: style mixing, truncation, CycleGAN
# Train a StyleGAN-style generator and a CycleGAN on MNIST for a few minutes each, then play with what they
# offer: style mixing (coarse styles from one latent, fine styles from another), the truncation trick, and
# translations between grey digits and coloured digits both ways; 9 minutes measured on this project's 2-core CPU
# machine (one thread, the other core busy).

# %%
import os

import matplotlib.pyplot as plt
import torch

import genlit
from genlit.callbacks.translation_grid import translation_picture
from genlit.imaging import samples_picture

SMOKE = os.environ.get("GENLIT_NOTEBOOK_SMOKE") == "1"  # the test suite runs every notebook tiny
MNIST = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def picture(image, title: str, size: float = 6.0) -> None:
    """Show a uint8 picture (H, W, C) with a title."""
    plt.figure(figsize=(size, size))
    plt.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
    plt.title(title)
    plt.axis("off")
    plt.show()


# %% [markdown]
# ## A StyleGAN-style generator
# `experiments/gan/stylegan_mnist.yaml`: a mapping network z -> w, modulated and demodulated convolutions, noise
# inputs, style mixing regularization, lazy R1, an EMA of G; a residual discriminator with minibatch standard
# deviation. `max_steps` counts D and G steps alike: 2,820 optimizer steps are 1,410 batches (10 epochs of the
# 9,000 training digits). Validation and the FID monitor are switched off here to keep the run short.
#
# The generator ends in a tanh: MNIST's background is exactly -1, and with StyleGAN2's linear output (plus its
# per-pixel noise inputs) D tells real from fake by the background alone and G collapses (docs/families/gan.md).

# %%
STYLE_STEPS = 8 if SMOKE else 2820
style = genlit.fit(
    "experiments/gan/stylegan_mnist.yaml",
    trainer={**QUIET, "max_steps": STYLE_STEPS, "limit_val_batches": 0, "callbacks": []},
    data={"dataset": MNIST},
)
G = style.model.eval()
print(f"{G.generator_steps} generator steps")
genlit.show(G.sample(100, generator=torch.Generator().manual_seed(0)), nrow=10, title="EMA samples, seed 0")

# %% [markdown]
# ## Style mixing
# Row i takes its coarse styles (the first `crossover` of the synthesis network's ws: the 7x7 layers, pose and
# shape) from latent z_i, column j its fine styles (14 and 28 px: stroke thickness and texture) from z_j. The first
# row and column show the two latents alone.

# %%
net = G.generator
gen = torch.Generator().manual_seed(1)
rows, cols = torch.randn(6, net.latent_dim, generator=gen), torch.randn(6, net.latent_dim, generator=gen)
crossover = net.num_ws // 2
with torch.no_grad(), G.ema_weights(), G.eval_mode():
    alone_rows = net(rows)  # (6, 1, 28, 28)
    alone_cols = net(cols)  # (6, 1, 28, 28)
    mixed = net.mix(rows.repeat_interleave(6, 0), cols.repeat(6, 1), crossover)  # (36, 1, 28, 28)
grid = torch.full((7, 7, *mixed.shape[1:]), -1.0)  # a black corner
grid[0, 1:], grid[1:, 0], grid[1:, 1:] = alone_cols, alone_rows, mixed.reshape(6, 6, *mixed.shape[1:])
picture(samples_picture(grid.flatten(0, 1), nrow=7), f"coarse styles from the rows, fine from the columns "
        f"(crossover {crossover} of {net.num_ws} ws)")  # fmt: skip

# %% [markdown]
# ## The truncation trick
# `truncation` moves every sample's w towards the average w (tracked during training): 1 leaves the samples alone,
# 0 draws the average digit for every seed. The same eight seeds per row; `genlit sample --truncation 0.7` does the
# same from the command line.

# %%
psis = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
sweep = torch.cat([G.sample_many(range(8), seed=0, truncation=psi) for psi in psis])  # (48, 1, 28, 28)
picture(samples_picture(sweep, nrow=8), "rows: truncation " + ", ".join(map(str, psis)))

# %% [markdown]
# ## CycleGAN: grey digits <-> coloured digits, no pairs
# `experiments/gan/cyclegan_mnist_domains.yaml`: domain A is the first half of MNIST's training digits, domain B the
# second half drawn in colour on textured backgrounds (built in code, so no A image has a B twin). Two generators,
# two PatchGAN discriminators, least-squares losses, cycle consistency and a history pool of fakes.

# %%
CYCLE_STEPS = 8 if SMOKE else 4000
cycle = genlit.fit(
    "experiments/gan/cyclegan_mnist_domains.yaml",
    trainer={**QUIET, "max_steps": CYCLE_STEPS, "limit_val_batches": 2, "callbacks": []},
    data={"dataset": MNIST},
)
translator = cycle.model.eval()
print(f"{translator.generator_steps} generator steps")

# %% [markdown]
# Held-out validation digits of each domain (never trained on), their translations and the way back. In each
# picture: the inputs, the translations, the reconstructions after the round trip.

# %%
examples = cycle.datamodule.examples(10)
for source, direction in (("A", "AB"), ("B", "BA")):
    x = examples[source]  # (10, C, 28, 28) in [-1, 1]
    there = translator.translate(x, direction)
    back = translator.translate(there, direction[::-1])
    picture(translation_picture(x, there, back), f"{direction}: inputs, translations, round trip", size=7)

# %% [markdown]
# The same from the command line, on a file of images:
#
#     genlit translate --ckpt RUN_DIR/checkpoints/last.ckpt --input digits.npz --direction AB --out coloured.npz
#
# with `RUN_DIR` the run folder printed below.
#
# How often does B -> A keep the digit? `python -m benchmarks.cyclegan_digits` scores it with genlit's MNIST
# evaluator (docs/families/gan.md has the figures).

# %%
print(cycle.run_dir)
