"""Latent diffusion (``ldm_mnist``) against pixel-space ``ddpm_cosine_v_mnist`` for the same training wall time,
in one run.

    python -m benchmarks.ldm_vs_pixel [--autoencoder CKPT | --autoencoder-budget 00:00:08:00] \
        [--budget 00:00:15:00] [--num 1000] [--sampler DDIM-50]

Without ``--autoencoder`` the first stage (``autoencoder_mnist``) is trained first for ``--autoencoder-budget``,
a cost the latent model pays once and that is printed apart. Then each diffusion experiment is trained with
``genlit fit`` for ``--budget`` (its YAML otherwise unchanged, ``ldm_mnist`` given the autoencoder), and its last
checkpoint (EMA weights) draws ``--num`` samples with ``--sampler`` from the same seed; the latent model's
decoder runs inside its sampling time. Printed per model: optimizer steps, training steps/s, samples/s, FID, KID,
precision and recall with genlit's MNIST evaluator against the 1,000 test images; and the FID of the
autoencoder's reconstructions of ``--num`` training images, the best a model on its latents can reach.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.args import positive_int
from benchmarks.diffusion_samplers import parse_sampler
from benchmarks.quality import train
from genlit.checkpoints import load_family
from genlit.commands.evaluate import evaluate, reference_cache, reference_features
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.families.latent_diffusion import load_first_stage
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor

SHOWN = ["fid", "kid_mean", "precision", "recall"]


def scores(samples: torch.Tensor, extractor, reference) -> dict[str, float]:
    """Metrics of float samples (N, C, H, W) in [-1, 1] against the reference features."""
    images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    metrics = evaluate(images, None, extractor, reference, kid_subset_size=min(1000, len(images)))
    return {k: metrics[k] for k in SHOWN}


def reconstruction_scores(autoencoder: str, data: ImageDataModule, num: int, extractor, reference) -> dict:
    """The autoencoder's reconstructions of the first ``num`` training images, scored like samples."""
    stage, _ = load_first_stage(autoencoder)
    data.setup("fit")
    images, _ = data.split_tensors("train", limit=num)  # uint8 (N, C, H, W)
    with torch.no_grad():
        recon = torch.cat([stage.eval().reconstruct(x.float() / 127.5 - 1) for x in images.split(250)])
    return scores(recon, extractor, reference)


def main() -> None:
    """Train (the autoencoder if needed, then both diffusion models), sample, score; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoencoder", help="a trained autoencoder_mnist checkpoint (default: train one first)")
    parser.add_argument("--autoencoder-budget", default="00:00:08:00", help="its training time when trained here")
    parser.add_argument("--budget", default="00:00:15:00", help="training wall time of each diffusion model")
    parser.add_argument("--num", type=positive_int, default=1000)
    parser.add_argument("--sampler", default="DDIM-50", help="as benchmarks.diffusion_samplers names them")
    args = parser.parse_args()
    try:
        sampler = parse_sampler(args.sampler)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    data = ImageDataModule(mnist)
    reference = reference_features(extractor, data, "test", reference_cache())[:2]
    autoencoder = args.autoencoder
    if autoencoder is None:
        start = time.perf_counter()
        ckpt, steps = train("diffusion/autoencoder_mnist", args.autoencoder_budget, mnist)
        autoencoder = str(ckpt)
        print(f"autoencoder_mnist: {steps} steps in {time.perf_counter() - start:.0f} s -> {autoencoder}", flush=True)
    recon = reconstruction_scores(autoencoder, data, args.num, extractor, reference)
    print("autoencoder reconstructions: " + ", ".join(f"{k} {v:.4g}" for k, v in recon.items()), flush=True)
    experiments = {"pixel ddpm_cosine_v_mnist": ("diffusion/ddpm_cosine_v_mnist", [])}
    experiments["latent ldm_mnist"] = ("diffusion/ldm_mnist", ["--model.autoencoder", autoencoder])
    rows = {}
    for name, (experiment, extra) in experiments.items():
        start = time.perf_counter()
        ckpt, steps = train(experiment, args.budget, mnist, extra)
        trained = time.perf_counter() - start
        model = load_family(ckpt).eval()
        start = time.perf_counter()
        with torch.no_grad():
            samples, _ = draw(model, args.num, seed=0, batch_size=250, sampler=sampler)
        sampling = time.perf_counter() - start
        rows[name] = {"steps": steps, "steps/s": steps / trained, "samples/s": args.num / sampling}
        rows[name] |= scores(samples, extractor, reference)
        print(f"{name}: {ckpt}; " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()), flush=True)
    print(f"\nSame training budget {args.budget} each, {args.num} samples with {args.sampler}, extractor "
          f"{extractor.identity} (steps/s includes validation and callbacks, as genlit fit runs them)")  # fmt: skip
    print("| model | steps | steps/s | samples/s | " + " | ".join(SHOWN) + " |")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.4g}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
