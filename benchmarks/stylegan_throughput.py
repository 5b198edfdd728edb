"""Training steps/s of genlit's GAN with the StyleGAN-style nets against a hand-written PyTorch loop doing the same
work, in one run.

The nets, batch and recipe of ``experiments/gan/stylegan_mnist.yaml`` (mapping network, modulated convolutions,
noise inputs, style mixing 0.9, residual D with minibatch std; non-saturating loss, lazy R1 every 16 D steps,
Adam, EMA of G), on the offline MNIST copy (``$GENLIT_DATA_DIR/mnist``). One "step" = one discriminator step + one
generator step. The loops alternate (plain, genlit, ...) and the median of the per-repeat ratios is printed.

    python -m benchmarks.stylegan_throughput [--steps 300] [--warmup 30] [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.timing import compare_with_plain_loop, fit_rate
from genlit.data.images import ImageDataModule
from genlit.families.gan import GAN
from genlit.nets.stylegan import StyleGANDiscriminator, StyleGANGenerator

SHAPE = (1, 28, 28)
G_ARGS = {
    "latent_dim": 128,
    "w_dim": 128,
    "mapping_layers": 4,
    "channels": 16,
    "max_channels": 64,
    "mixing_prob": 0.9,
    "tanh_output": True,
}
D_ARGS = {"channels": 16, "max_channels": 64}
R1_GAMMA, R1_EVERY, EMA_DECAY = 0.1, 16, 0.995


def adam(params):
    """The optimizer both loops use (stylegan_mnist's)."""
    return torch.optim.Adam(params, lr=2.5e-3, betas=(0.0, 0.99))


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int) -> float:
    """A hand-written StyleGAN-style training loop; returns steps/s measured after ``warmup`` steps."""
    G, D = StyleGANGenerator(SHAPE, 0, **G_ARGS), StyleGANDiscriminator(SHAPE, 0, **D_ARGS)
    ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True).requires_grad_(False)
    g_opt, d_opt = adam(G.parameters()), adam(D.parameters())
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        real = images[order[lo : lo + batch_size]].float().div(127.5).sub(1)  # (B, 1, 28, 28)
        with torch.no_grad():
            fake = G(torch.randn(batch_size, G.latent_dim))  # (B, 1, 28, 28)
        r1_now = step % R1_EVERY == 0
        real.requires_grad_(r1_now)
        real_out = D(real)  # (B,)
        d_loss = F.softplus(-real_out).mean() + F.softplus(D(fake)).mean()
        if r1_now:  # lazy R1, scaled by its interval (StyleGAN2, sec. 3.1)
            (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)
            d_loss = d_loss + R1_GAMMA / 2 * R1_EVERY * grad.square().flatten(1).sum(1).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        D.requires_grad_(False)
        g_loss = F.softplus(-D(G(torch.randn(batch_size, G.latent_dim)))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        D.requires_grad_(True)
        ema.update_parameters(G)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's GAN family with the same nets and recipe through a Lightning Trainer; steps/s after ``warmup``."""
    nets = partial(StyleGANGenerator, **G_ARGS), partial(StyleGANDiscriminator, **D_ARGS)
    recipe = {"r1_gamma": R1_GAMMA, "r1_every": R1_EVERY, "ema_decay": EMA_DECAY}
    model = GAN(*nets, SHAPE, 10, **recipe, g_optimizer=adam, d_optimizer=adam)
    return fit_rate(model, data, steps, warmup, progress_bar, optimizer_steps_per_batch=2)  # D + G step per batch


if __name__ == "__main__":
    compare_with_plain_loop(__doc__, plain_loop, genlit_loop, batch_size=64, steps=100, warmup=10)
