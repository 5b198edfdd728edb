"""FID (genlit's MNIST evaluator) of one diffusion checkpoint under several samplers (default DDPM-1000, DDIM-50 and
DDIM-20; the continuous-sigma ones on DDPM and EDM checkpoints alike).

    python -m benchmarks.diffusion_samplers --ckpt runs/.../last.ckpt [--extractor evaluator:mnist_classifier] \
        [--num 500] [--split test] [--samplers DDPM-1000 DDIM-50 DDIM-50-eta0.5 Heun-18 DPM-20 Euler-35 ...]

Sampler names: ``DDPM-<steps>``, ``DDIM-<steps>[-eta<eta>]``, ``Euler-<steps>``, ``Heun-<steps>[-churn<S>]`` (2 steps
- 1 network evaluations: Heun-18 is EDM's 35) and ``DPM-<steps>[-eta<eta>]`` (DPM-Solver++(2M); eta 1: its SDE
form).

Every sampler starts from the same noise (and, for class-conditional models, the same balanced labels at
the model's guidance scale). Prints FID, KID, precision, recall, class coverage, the share of samples
classified as the requested label (conditional models), the seconds each sampler took, and the ratio of
each FID to the first sampler's. The test split of ``$GENLIT_DATA_DIR/mnist`` is the reference.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import torch

from benchmarks.args import positive_int
from genlit.checkpoints import load_family
from genlit.commands.evaluate import evaluate, reference_cache, reference_features
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler, Sampler
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor

DEFAULT_SAMPLERS = ["DDPM-1000", "DDIM-50", "DDIM-20"]


def parse_sampler(name: str) -> Sampler:
    """A sampler by name (see the module docstring), e.g. ``DDIM-50-eta0.5`` or ``Heun-18``."""
    match = re.fullmatch(r"(DDPM|DDIM|Euler|Heun|DPM)-(\d+)(?:-(eta|churn)(\d+(?:\.\d*)?))?", name)
    extras = {"DDIM": "eta", "Heun": "churn", "DPM": "eta"}
    if match is None or (match[3] is not None and extras.get(match[1]) != match[3]):
        raise argparse.ArgumentTypeError(
            f"unknown sampler {name!r}; use DDPM-<steps>, DDIM-<steps>[-eta<eta>], Euler-<steps>, "
            "Heun-<steps>[-churn<S>] or DPM-<steps>[-eta<eta>]"
        )
    kind, steps, extra = match[1], int(match[2]), float(match[4] or 0)
    try:
        if kind == "DDIM":
            return DDIMSampler(steps, eta=extra)
        if kind == "Heun":
            return HeunSampler(steps, churn=extra)
        if kind == "DPM":
            return DPMSolverSampler(steps, eta=extra)
        return {"DDPM": DDPMSampler, "Euler": EulerSampler}[kind](steps)
    except ValueError as err:  # e.g. 0 steps
        raise argparse.ArgumentTypeError(f"sampler {name!r}: {err}") from None


def evaluations(sampler: Sampler, schedule) -> int:
    """Network evaluations of one sample (Heun: 2 per step but the last)."""
    steps = len(sampler.timesteps(schedule))
    return 2 * steps - 1 if isinstance(sampler, HeunSampler) else steps


def main() -> None:
    """Sample with each sampler, evaluate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--extractor", default="evaluator:mnist_classifier", help="evaluator:NAME (trained on the "
                        "MNIST train split once, cached), a classifier checkpoint or its run root")  # fmt: skip
    parser.add_argument("--num", type=positive_int, default=500)
    parser.add_argument("--split", default="test")
    parser.add_argument("--samplers", nargs="+", default=DEFAULT_SAMPLERS, help="e.g. DDPM-1000 DDIM-50 DDIM-50-eta0.5")
    args = parser.parse_args()
    try:
        samplers = {name: parse_sampler(name) for name in args.samplers}
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    model = load_family(args.ckpt).eval()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    extractor = make_extractor(args.extractor, dataset=mnist)
    data = ImageDataModule(mnist)
    reference = reference_features(extractor, data, args.split, reference_cache())[:2]
    print(f"{args.ckpt}: {args.num} samples per sampler against mnist [{args.split}], extractor {extractor.identity}")
    base = None
    for name, sampler in samplers.items():
        start = time.perf_counter()
        samples, labels = draw(model, args.num, seed=0, batch_size=250, sampler=sampler)
        seconds = time.perf_counter() - start
        images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()
        metrics = evaluate(images, labels, extractor, reference, kid_subset_size=min(500, args.num))
        base = metrics["fid"] if base is None else base
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.startswith("is_"))
        nfe = evaluations(sampler, model.schedule)
        ratio = metrics["fid"] / base
        print(f"  {name:<10} NFE {nfe:4d} {seconds:6.0f} s  {shown}  FID ratio to {args.samplers[0]} {ratio:.3f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
