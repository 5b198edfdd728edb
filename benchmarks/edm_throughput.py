"""Training steps/s of genlit's EDM family against a hand-written PyTorch EDM loop doing the same work.

Same U-Net as experiments/diffusion/edm_mnist.yaml (channels 16, mults 1-2-4, attention at 7x7), batch, Adam,
EDM's preconditioning, log-normal noise levels and loss weight, EMA of the weights, on the offline MNIST copy
(``$GENLIT_DATA_DIR/mnist``). The loops alternate and the median of the per-repeat ratios is printed.

    python -m benchmarks.edm_throughput [--steps 100] [--warmup 10] [--repeats 5] [--batch-size 64]
"""

from __future__ import annotations

import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.diffusion_throughput import EMA_DECAY, SHAPE, UNET, adam
from benchmarks.timing import compare_with_plain_loop, fit_rate
from genlit.data.images import ImageDataModule
from genlit.families.edm import EDM

SIGMA_DATA, P_MEAN, P_STD = 0.5, -1.2, 1.2


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int) -> float:
    """A hand-written EDM training loop (Karras et al. 2022, table 1); returns steps/s after ``warmup``."""
    net = UNET(SHAPE, 0)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True).requires_grad_(False)
    opt = adam(net.parameters())
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        y = images[order[lo : lo + batch_size]].float() / 127.5 - 1  # (B, 1, 28, 28)
        sigma = (P_MEAN + P_STD * torch.randn(batch_size)).exp().view(-1, 1, 1, 1)
        x = y + sigma * torch.randn_like(y)
        norm = (sigma**2 + SIGMA_DATA**2).sqrt()
        c_skip, c_out, c_in = SIGMA_DATA**2 / norm**2, sigma * SIGMA_DATA / norm, 1 / norm
        out = net(c_in * x, sigma.flatten().log() / 4)
        loss = (out - (y - c_skip * x) / c_out).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(net)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's EDM through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = EDM(UNET, SHAPE, 10, ema_decay=EMA_DECAY, optimizer=adam)
    return fit_rate(model, data, steps, warmup, progress_bar)


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    compare_with_plain_loop(__doc__, plain_loop, genlit_loop, batch_size=64, steps=100, warmup=10)


if __name__ == "__main__":
    main()
