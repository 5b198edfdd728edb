"""Quality figures of the VAE experiments, trained and tested through ``genlit`` as a user runs them.

    python -m benchmarks.vae_quality vae_mnist --max-time 00:00:10:00          # test NLL (IW, k=1000)
    python -m benchmarks.vae_quality vae_anomaly_mnist --max-time 00:00:05:00  # anomaly AUROC

Trains on the 9,000-image train split of ``$GENLIT_DATA_DIR/mnist`` (5% of it carved off for validation)
for the time budget, then runs ``genlit test`` on the 1,000-image test split with the checkpoint of the
best validation ELBO, and prints the test metrics.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import wandb

from genlit.cli import GenlitCLI

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "vae"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def main() -> None:
    """Fit, test with the best checkpoint, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=["vae_mnist", "vae_anomaly_mnist", "beta_vae_mnist", "cvae_mnist"])
    parser.add_argument("--max-time", default="00:00:10:00", help="training budget (DD:HH:MM:SS)")
    args = parser.parse_args()
    config = str(EXPERIMENTS / f"{args.experiment}.yaml")
    data = ["--data.dataset", os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")]
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        fit = GenlitCLI(["fit", "--config", config, *data, *QUIET, "--trainer.default_root_dir", root,
                         "--trainer.max_time", args.max_time, "--trainer.max_epochs", "-1"])  # fmt: skip
        train_s = time.perf_counter() - start
        wandb.finish()  # the offline W&B run of the fit
        best = fit.trainer.checkpoint_callback.best_model_path or fit.trainer.checkpoint_callback.last_model_path
        start = time.perf_counter()
        test = GenlitCLI(["test", "--config", config, *data, *QUIET, "--trainer.default_root_dir", root,
                          "--trainer.logger", "false", "--ckpt_path", best])  # fmt: skip
        test_s = time.perf_counter() - start
    print(f"{args.experiment}: trained {train_s:.0f} s ({fit.trainer.global_step} steps, {fit.trainer.current_epoch}"
          f" epochs); tested {Path(best).name} in {test_s:.0f} s")  # fmt: skip
    for key, value in sorted(test.trainer.callback_metrics.items()):
        print(f"  {key}: {float(value):.4f}")


if __name__ == "__main__":
    main()
