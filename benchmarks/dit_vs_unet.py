"""``dit_mnist`` (DiT backbone) against ``ddpm_cosine_v_mnist`` (U-Net) at equal parameters and training steps, in one
run: parameters, training steps/s, and FID under the same samplers.

    python -m benchmarks.dit_vs_unet [--steps 3000] [--num 1000] [--samplers DDIM-50 Heun-18-churn40] \
        [--unet-ckpt CKPT] [--dit-ckpt CKPT] [--speed-steps 30] [--repeats 3]

The two experiments differ only in the backbone (same schedule, v target, min-SNR-5, EMA, optimizer, batch).
Each is trained with ``genlit fit`` for ``--steps`` optimizer steps (its YAML otherwise unchanged), unless a
checkpoint of it is given (its step count is read from the checkpoint and printed, so equal steps can be
checked). Training speed is measured apart, in this run, with both nets in the same Lightning loop
(:func:`benchmarks.diffusion_throughput.genlit_loop`: batch 64, no validation or callbacks), alternating, median
of ``--repeats``. Then each checkpoint's EMA weights draw ``--num`` samples per sampler from the same noise, scored
with genlit's MNIST evaluator against the 1,000 test images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch

from benchmarks import diffusion_throughput
from benchmarks.args import positive_int
from benchmarks.diffusion_samplers import evaluations, parse_sampler
from benchmarks.dit_throughput import DIT
from benchmarks.quality import train
from benchmarks.timing import alternate, mnist_data
from genlit.checkpoints import load_family, read_checkpoint
from genlit.commands.evaluate import evaluate, reference_cache, reference_features
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor

EXPERIMENTS = {"U-Net": "diffusion/ddpm_cosine_v_mnist", "DiT": "diffusion/dit_mnist"}
FACTORIES = {"U-Net": diffusion_throughput.UNET, "DiT": DIT}  # the nets of the two YAMLs


def training_speed(steps: int, repeats: int) -> dict[str, float]:
    """Median training steps/s of each backbone in the same Lightning loop, alternating."""
    data, _ = mnist_data(64)
    loops = {
        name: partial(diffusion_throughput.genlit_loop, data, steps, 5, False, net_factory=factory)
        for name, factory in FACTORIES.items()
    }
    return {name: statistics.median(rates) for name, rates in alternate(loops, repeats).items()}


def main() -> None:
    """Train (or load) both, time both, sample and score both; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=positive_int, default=3000, help="training steps of each model")
    parser.add_argument("--num", type=positive_int, default=1000, help="samples per model and sampler")
    parser.add_argument("--samplers", nargs="+", default=["DDIM-50", "Heun-18-churn40"])
    parser.add_argument("--unet-ckpt", help="a trained ddpm_cosine_v_mnist checkpoint (default: train one)")
    parser.add_argument("--dit-ckpt", help="a trained dit_mnist checkpoint (default: train one)")
    parser.add_argument("--speed-steps", type=positive_int, default=30, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()
    try:
        samplers = {name: parse_sampler(name) for name in args.samplers}
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    ckpts = {"U-Net": args.unet_ckpt, "DiT": args.dit_ckpt}
    for name, experiment in EXPERIMENTS.items():
        if ckpts[name] is None:
            start = time.perf_counter()
            ckpts[name], _ = train(experiment, "01:00:00:00", mnist, ["--trainer.max_steps", str(args.steps)])
            print(f"{name}: trained in {time.perf_counter() - start:.0f} s -> {ckpts[name]}", flush=True)
    speed = training_speed(args.speed_steps, args.repeats)
    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    reference = reference_features(extractor, ImageDataModule(mnist), "test", reference_cache())[:2]
    rows = []
    for name, ckpt in ckpts.items():
        model = load_family(ckpt).eval()
        steps = read_checkpoint(ckpt, mmap=True)["global_step"]
        params = sum(p.numel() for p in model.net.parameters())
        for sampler_name, sampler in samplers.items():
            start = time.perf_counter()
            with torch.no_grad():
                samples, _ = draw(model, args.num, seed=0, batch_size=250, sampler=sampler)
            seconds = time.perf_counter() - start
            images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
            metrics = evaluate(images, None, extractor, reference, kid_subset_size=min(1000, args.num))
            nfe = evaluations(sampler, model.schedule)
            rows.append((name, params, steps, speed[name], sampler_name, nfe, args.num / seconds, metrics))
            print(f"{name} {sampler_name}: FID {metrics['fid']:.2f} ({ckpt})", flush=True)
    print(f"\n{args.num} samples per row, same noise; extractor {extractor.identity}; steps/s: batch 64, the same "
          f"Lightning loop, median of {args.repeats} alternating repeats of {args.speed_steps} steps")  # fmt: skip
    print("| backbone | parameters | steps | train steps/s | sampler | NFE | samples/s | FID | precision | recall |")
    for name, params, steps, rate, sampler_name, nfe, per_second, m in rows:
        print(f"| {name} | {params / 1e6:.2f}M | {steps} | {rate:.2f} | {sampler_name} | {nfe} | {per_second:.1f} | "
              f"{m['fid']:.1f} | {m['precision']:.3f} | {m['recall']:.3f} |")  # fmt: skip
    print(f"DiT / U-Net training steps/s: {speed['DiT'] / speed['U-Net']:.2f}")


if __name__ == "__main__":
    main()
