"""Training steps/s of genlit's text-to-image diffusion family against a hand-written PyTorch loop doing the same work.

The recipe of experiments/diffusion/text2img_mnist.yaml: a text transformer over word tokens (width 64, 2 layers,
16 tokens) trained jointly with a U-Net that cross-attends to it at 7x7, batch 64, Adam, the cosine schedule, v
target with min-SNR-5 weights, unknown words inserted before 10% of the words and 10% replaced by one, 10% of the
captions dropped to the empty prompt, EMA of the weights; MNIST with captions generated from the labels
(:class:`~genlit.data.captioned.CaptionedImageDataModule`, offline copy under
``$GENLIT_DATA_DIR/mnist``). The loops alternate and the median of the per-repeat ratios is printed.

    python -m benchmarks.text2img_throughput [--steps 100] [--warmup 10] [--repeats 5] [--batch-size 64]
"""

from __future__ import annotations

import os
import time
from functools import partial

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.diffusion_throughput import EMA_DECAY, NET, SHAPE, adam
from benchmarks.ldm_throughput import MIN_SNR_GAMMA, cosine_alpha_bar
from benchmarks.timing import alternate, fit_rate, report_ratio, throughput_args
from genlit.data.captioned import CaptionedImageDataModule
from genlit.data.captions import PAD
from genlit.diffusion import CosineSchedule
from genlit.families.text_to_image import TextDiffusion, insert_unknown
from genlit.nets.text_encoder import TextConditioned, TextTransformer
from genlit.nets.unet import UNet

BLOCK, PROMPT_DROPOUT, TOKEN_DROPOUT, TOKEN_INSERTION = 16, 0.1, 0.1, 0.1
UNET = partial(UNet, **NET)
ENCODER = partial(TextTransformer, dim=64, depth=2, num_heads=4)


def plain_loop(images: torch.Tensor, ids: torch.Tensor, vocab_size: int, unk: int, steps: int, warmup: int,
               batch_size: int) -> float:  # fmt: skip
    """A hand-written text-to-image loop (joint text encoder, v target, min-SNR-5, unknown-word insertion and
    dropout, prompt dropout, EMA); returns steps/s after ``warmup``."""
    encoder = ENCODER(vocab_size, BLOCK)
    net = TextConditioned(encoder, UNET(SHAPE, 0, context_dim=encoder.dim))
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True).requires_grad_(False)
    opt = adam(net.parameters())
    alpha_bar = cosine_alpha_bar()  # (T,)
    order = torch.randperm(len(images))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        x0 = images[index].float() / 127.5 - 1  # (B, 1, 28, 28)
        caption = insert_unknown(ids[index], TOKEN_INSERTION, unk)  # (B, L)
        caption = torch.where((torch.rand(caption.shape) < TOKEN_DROPOUT) & (caption >= 0), unk, caption)
        drop = torch.rand(batch_size, 1) < PROMPT_DROPOUT
        caption = torch.where(drop, torch.full_like(caption, PAD), caption)
        t = torch.randint(len(alpha_bar), (batch_size,))
        noise = torch.randn_like(x0)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        snr = ab.flatten() / (1 - ab.flatten())
        weight = snr.clamp(max=MIN_SNR_GAMMA) / (snr + 1)  # min-SNR-gamma for the v target
        loss = (
            weight * (net(a * x0 + s * noise, t, caption) - (a * noise - s * x0)).square().flatten(1).mean(1)
        ).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(net)
    return steps / (time.perf_counter() - start)


def genlit_loop(data: CaptionedImageDataModule, steps: int, warmup: int, progress_bar: bool) -> float:
    """genlit's TextDiffusion through a Lightning Trainer; returns steps/s after ``warmup`` steps."""
    model = TextDiffusion(UNET, ENCODER, SHAPE, vocab_size=data.vocab_size, block_size=BLOCK, schedule=CosineSchedule(),
                          prediction="v", min_snr_gamma=MIN_SNR_GAMMA, prompt_dropout=PROMPT_DROPOUT,
                          token_dropout=TOKEN_DROPOUT, token_insertion=TOKEN_INSERTION, ema_decay=EMA_DECAY,
                          optimizer=adam)  # fmt: skip
    return fit_rate(model, data, steps, warmup, progress_bar)


def main() -> None:
    """Run both loops alternately and print steps/s and the ratio."""
    args = throughput_args(__doc__, batch_size=64, steps=100, warmup=10)
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    data = CaptionedImageDataModule(mnist, text_column=None, caption_labels="label", batch_size=args.batch_size,
                                    tokenizer="word", block_size=BLOCK)  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    images, ids = data.train_dataloader().dataset.tensors
    print(f"batch {args.batch_size}, captions of {BLOCK} word tokens, vocabulary {data.vocab_size}")
    loops = {
        "plain": lambda: plain_loop(
            images, ids, data.vocab_size, data.tokenizer.unk_id, args.steps, args.warmup, args.batch_size
        ),
        "genlit": lambda: genlit_loop(data, args.steps, args.warmup, not args.no_progress_bar),
    }
    report_ratio(alternate(loops, args.repeats), "genlit", "plain")


if __name__ == "__main__":
    main()
