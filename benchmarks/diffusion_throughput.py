"""Training steps/s of genlit's diffusion family against a hand-written PyTorch loop doing the same work.

Same U-Net as experiments/diffusion/ddpm_mnist.yaml (channels 16, mults 1-2-4, attention at 7x7), batch,
Adam, linear schedule, eps target and EMA of the weights, on the offline MNIST copy
(``$GENLIT_DATA_DIR/mnist``). The loops alternate and the median of the per-repeat ratios is printed.

    python -m benchmarks.diffusion_throughput [--steps 100] [--warmup 10] [--repeats 5] [--batch-size 64]
"""

from __future__ import annotations

import time
from functools import partial

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.timing import compare_with_plain_loop, fit_rate
from genlit.data.images import ImageDataModule
from genlit.diffusion import LinearSchedule
from genlit.families.diffusion import Diffusion
from genlit.nets.unet import UNet

SHAPE, EMA_DECAY = (1, 28, 28), 0.999
NET = {"channels": 16, "channel_mults": (1, 2, 4), "num_res_blocks": 1, "attention_resolutions": (7,)}
UNET = partial(UNet, **NET)


def adam(params):
    """The optimizer both loops use."""
    return torch.optim.Adam(params, lr=1e-3)


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int, net_factory=UNET) -> float:
    """A hand-written DDPM training loop (eps target, uniform t, EMA); returns steps/s after ``warmup``."""
    net = net_factory(SHAPE, 0)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True).requires_grad_(False)
    opt = adam(net.parameters())
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()  # (T,)
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        x0 = images[order[lo : lo + batch_size]].float() / 127.5 - 1  # (B, 1, 28, 28)
        t = torch.randint(1000, (batch_size,))
        noise = torch.randn_like(x0)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        loss = (net(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t) - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(net)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool, net_factory=UNET) -> float:
    """genlit's Diffusion through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = Diffusion(net_factory, SHAPE, 10, schedule=LinearSchedule(), ema_decay=EMA_DECAY, optimizer=adam)
    return fit_rate(model, data, steps, warmup, progress_bar)


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    compare_with_plain_loop(__doc__, plain_loop, genlit_loop, batch_size=64, steps=100, warmup=10)


if __name__ == "__main__":
    main()
