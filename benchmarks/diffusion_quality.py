"""Quality figures of the diffusion experiments, trained and tested through ``genlit`` as a user runs them.

    python -m benchmarks.diffusion_quality ddpm_mnist --max-time 00:00:15:00

Trains on the 9,000-image train split of ``$GENLIT_DATA_DIR/mnist`` for the time budget (run directory
under ``runs/benchmarks/``), then, with the last checkpoint's EMA weights, draws the same noise through
DDPM with all 1000 steps and DDIM with 50 and 20 steps (eta 0) into PNG grids beside the checkpoint
(class-conditional models: ten samples of each digit, one digit per row, at the model's guidance scale),
and runs ``genlit test`` on the 1,000-image test split (``test/nll_bits_per_dim``, the variational bound).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import wandb

from genlit.checkpoints import load_family
from genlit.cli import GenlitCLI
from genlit.diffusion import DDIMSampler, DDPMSampler
from genlit.imaging import samples_picture, save_png

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SAMPLERS = {"ddpm1000": DDPMSampler(None), "ddim50": DDIMSampler(50), "ddim20": DDIMSampler(20)}


def draw_grids(ckpt: Path) -> None:
    """One PNG per sampler from the same noise; prints the time each took."""
    model = load_family(ckpt).eval()
    num = 100 if model.conditional else 64
    labels = torch.arange(num) // 10 if model.conditional else None  # one digit per row
    for name, sampler in SAMPLERS.items():
        start = time.perf_counter()
        samples = model.sample_many(range(num), seed=0, labels=labels, sampler=sampler)
        out = ckpt.parent / f"{name}.png"
        save_png(samples_picture(samples), out)
        print(f"  {name}: {num} samples in {time.perf_counter() - start:.0f} s -> {out}")


def main() -> None:
    """Fit, sample with each sampler, test; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=["ddpm_mnist", "ddpm_cosine_v_mnist", "cfg_mnist"])
    parser.add_argument("--max-time", default="00:00:15:00", help="training budget (DD:HH:MM:SS)")
    args = parser.parse_args()
    config = str(REPO / "experiments" / "diffusion" / f"{args.experiment}.yaml")
    data = ["--data.dataset", os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")]
    root = str(REPO / "runs" / "benchmarks" / args.experiment)
    start = time.perf_counter()
    fit = GenlitCLI(["fit", "--config", config, *data, *QUIET, "--trainer.default_root_dir", root,
                     "--trainer.max_time", args.max_time])  # fmt: skip
    wandb.finish()  # the offline W&B run of the fit
    last = Path(fit.trainer.checkpoint_callback.last_model_path)
    print(f"{args.experiment}: trained {time.perf_counter() - start:.0f} s ({fit.trainer.global_step} steps, "
          f"{fit.trainer.current_epoch} epochs); run {last.parent.parent}")  # fmt: skip
    draw_grids(last)
    start = time.perf_counter()
    test = GenlitCLI(["test", "--config", config, *data, *QUIET, "--trainer.default_root_dir", root,
                      "--trainer.logger", "false", "--ckpt_path", str(last)])  # fmt: skip
    print(f"  tested {last.name} in {time.perf_counter() - start:.0f} s")
    for key, value in sorted(test.trainer.callback_metrics.items()):
        print(f"  {key}: {float(value):.4f}")


if __name__ == "__main__":
    main()
