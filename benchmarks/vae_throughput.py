"""Training steps/s of genlit's VAE against a hand-written PyTorch loop doing the same work, in one run.

Same nets as experiments/vae/vae_mnist.yaml (conv encoder/decoder, width 32, hidden 256, latent 32),
batch, Adam, Bernoulli likelihood with dynamic binarization, on the offline MNIST copy
(``$GENLIT_DATA_DIR/mnist``). The loops alternate and the median of the per-repeat ratios is printed.

    python -m benchmarks.vae_throughput [--steps 300] [--warmup 30] [--repeats 5] [--batch-size 128]
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.timing import compare_with_plain_loop, fit_rate
from genlit.data.images import ImageDataModule
from genlit.families.vae import VAE
from genlit.nets.conv_vae import ConvDecoder, ConvEncoder

SHAPE, LATENT = (1, 28, 28), 32
NETS = {"width": 32, "hidden": 256}


def adam(params):
    """The optimizer both loops use."""
    return torch.optim.Adam(params, lr=1e-3)


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int) -> float:
    """A hand-written VAE training loop; returns steps/s measured after ``warmup`` steps."""
    enc, dec = ConvEncoder(SHAPE, 0, LATENT, **NETS), ConvDecoder(SHAPE, 0, LATENT, **NETS)
    opt = adam([*enc.parameters(), *dec.parameters()])
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        x = torch.bernoulli(images[order[lo : lo + batch_size]].float() / 255)  # (B, 1, 28, 28) in {0, 1}
        mu, logvar = enc(x * 2 - 1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
        loss = (recon + kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's VAE through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = VAE(
        partial(ConvEncoder, **NETS), partial(ConvDecoder, **NETS), SHAPE, 10, latent_dim=LATENT, optimizer=adam
    )
    return fit_rate(model, data, steps, warmup, progress_bar)


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    compare_with_plain_loop(__doc__, plain_loop, genlit_loop, batch_size=128)


if __name__ == "__main__":
    main()
