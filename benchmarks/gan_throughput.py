"""Training steps/s of genlit's GAN against a hand-written PyTorch loop doing the same work, in one run.

Same nets (DCGAN 28 px, width 64), batch, Adam optimizers, non-saturating loss and EMA of G, on the offline
MNIST copy (``$GENLIT_DATA_DIR/mnist``). One "step" = one discriminator step + one generator step.
The loops alternate (plain, plain with D frozen in the G step, genlit, ...) and the median of the per-repeat ratios is
printed: genlit against the usual hand-written loop, and against one doing exactly genlit's work.

    python -m benchmarks.gan_throughput [--steps 300] [--warmup 30] [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.timing import alternate, fit_rate, mnist_data, report_ratio, throughput_args
from genlit.data.images import ImageDataModule
from genlit.families.gan import GAN
from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator

SHAPE = (1, 28, 28)


def adam(params):
    """The optimizer both loops use (DCGAN's)."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int, freeze_d: bool) -> float:
    """A hand-written training loop; returns steps/s measured after ``warmup`` steps.

    ``freeze_d``: skip D's weight gradients during the G step, as genlit does (the PyTorch DCGAN example
    does not: it computes them and zeroes them before the next D step).
    """
    G, D = DCGANGenerator(SHAPE, 0), DCGANDiscriminator(SHAPE, 0)
    ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True).requires_grad_(False)
    g_opt, d_opt = adam(G.parameters()), adam(D.parameters())
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        real = images[order[lo : lo + batch_size]].float().div(127.5).sub(1)  # (B, 1, 28, 28)
        fake = G(torch.randn(batch_size, G.latent_dim)).detach()
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        D.requires_grad_(not freeze_d)
        g_loss = F.softplus(-D(G(torch.randn(batch_size, G.latent_dim)))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        D.requires_grad_(True)
        ema.update_parameters(G)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's GAN through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = GAN(DCGANGenerator, DCGANDiscriminator, SHAPE, 10, g_optimizer=adam, d_optimizer=adam)
    return fit_rate(model, data, steps, warmup, progress_bar, optimizer_steps_per_batch=2)  # D + G step per batch


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    args = throughput_args(__doc__, batch_size=64)
    data, images = mnist_data(args.batch_size)
    loops = {
        "plain": lambda: plain_loop(images, args.steps, args.warmup, args.batch_size, freeze_d=False),
        "plain_frozen_d": lambda: plain_loop(images, args.steps, args.warmup, args.batch_size, freeze_d=True),
        "genlit": lambda: genlit_loop(data, args.steps, args.warmup, not args.no_progress_bar),
    }
    runs = alternate(loops, args.repeats)
    report_ratio(runs, "genlit", "plain")
    report_ratio(runs, "genlit", "plain_frozen_d", " (same work)")


if __name__ == "__main__":
    main()
