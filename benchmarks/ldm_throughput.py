"""Training steps/s of genlit's latent diffusion family against a hand-written PyTorch loop doing the same work.

The first stage and denoiser of experiments/diffusion/autoencoder_mnist.yaml and ldm_mnist.yaml (a frozen KL
autoencoder, 28x28 -> 3x7x7, and a DiT with 1x1 patches, width 96, 4 blocks), batch 64, Adam, the cosine schedule,
v target with min-SNR-5 weights and EMA of the weights, on the offline MNIST copy (``$GENLIT_DATA_DIR/mnist``). Each
step encodes the batch with the frozen encoder (posterior mean, times the latent scale measured on the first
batch). The autoencoder is ``--autoencoder`` (a trained autoencoder_mnist checkpoint) or, by default, the same net
untrained (the cost is the same). The loops alternate and the median of the per-repeat ratios is printed.

    python -m benchmarks.ldm_throughput [--autoencoder CKPT] [--steps 100] [--warmup 10] [--repeats 5]
"""

from __future__ import annotations

import math
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.diffusion_throughput import EMA_DECAY, SHAPE, adam
from benchmarks.timing import compare_with_plain_loop, fit_rate, throughput_parser
from genlit.data.images import ImageDataModule
from genlit.diffusion import CosineSchedule
from genlit.families.autoencoder import KLAutoencoder
from genlit.families.latent_diffusion import LatentDiffusion, load_first_stage
from genlit.nets.autoencoder import KLAutoencoderNet
from genlit.nets.dit import DiT

LATENT_DIT = partial(DiT, patch_size=1, hidden_size=96, depth=4, num_heads=4, mlp_ratio=4.0)
AUTOENCODER_NET = partial(KLAutoencoderNet, latent_channels=3, width=32, channel_mults=(1, 2, 2), res_blocks=1,
                          groups=8)  # fmt: skip
MIN_SNR_GAMMA = 5.0


def untrained_autoencoder(folder: Path) -> str:
    """autoencoder_mnist's net, untrained, saved as a checkpoint the latent family can load."""
    model = KLAutoencoder(AUTOENCODER_NET, data_shape=SHAPE)
    path = folder / "autoencoder.ckpt"
    class_path = f"{KLAutoencoder.__module__}.{KLAutoencoder.__qualname__}"
    hparams = {"_class_path": class_path, **model.hparams}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


def cosine_alpha_bar(steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar (T,) float32, betas clipped at ``max_beta``."""
    f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0).float()


def plain_loop(images: torch.Tensor, steps: int, warmup: int, batch_size: int, autoencoder: str) -> float:
    """A hand-written latent diffusion loop (frozen encoder, v target, min-SNR-5, EMA); steps/s after ``warmup``."""
    stage, _ = load_first_stage(autoencoder)
    encoder = stage.net.eval().requires_grad_(False)
    latent_shape = encoder.latent_shape
    net = LATENT_DIT(latent_shape, 0)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True).requires_grad_(False)
    opt = adam(net.parameters())
    alpha_bar = cosine_alpha_bar()  # (T,)
    order = torch.randperm(len(images))
    scale = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        lo = (step * batch_size) % (len(images) - batch_size)
        x = images[order[lo : lo + batch_size]].float() / 127.5 - 1  # (B, 1, 28, 28)
        with torch.no_grad():
            z0 = encoder.encode(x)[0]  # (B, 3, 7, 7) posterior mean
            scale = 1 / z0.std() if scale is None else scale
            z0 = z0 * scale
        t = torch.randint(len(alpha_bar), (batch_size,))
        noise = torch.randn_like(z0)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        v = a * noise - s * z0
        snr = ab.flatten() / (1 - ab.flatten())
        weight = snr.clamp(max=MIN_SNR_GAMMA) / (snr + 1)  # min-SNR-gamma for the v target
        loss = (weight * (net(a * z0 + s * noise, t) - v).square().flatten(1).mean(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(net)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: ImageDataModule, steps: int, warmup: int, progress_bar: bool, autoencoder: str) -> float:
    """genlit's LatentDiffusion through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = LatentDiffusion(LATENT_DIT, autoencoder=autoencoder, data_shape=SHAPE, schedule=CosineSchedule(),
                            prediction="v", min_snr_gamma=MIN_SNR_GAMMA, clip_x0=False, ema_decay=EMA_DECAY,
                            optimizer=adam)  # fmt: skip
    return fit_rate(model, data, steps, warmup, progress_bar)


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    parser = throughput_parser(__doc__, batch_size=64, steps=100, warmup=10)
    parser.add_argument("--autoencoder", help="a trained autoencoder_mnist checkpoint (default: the net untrained)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        autoencoder = args.autoencoder or untrained_autoencoder(Path(folder))
        plain = partial(plain_loop, autoencoder=autoencoder)
        genlit = partial(genlit_loop, autoencoder=autoencoder)
        compare_with_plain_loop(__doc__, plain, genlit, batch_size=64, args=args)


if __name__ == "__main__":
    main()
