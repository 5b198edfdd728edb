"""Leave-one-digit-out anomaly detection on MNIST: the AUROC of every anomaly score, per digit and mean.

    python -m benchmarks.anomaly_digits --config experiments/vae/vae_anomaly_mnist.yaml --steps 1500
    python -m benchmarks.anomaly_digits --config experiments/pixelcnn/pixelcnn_anomaly_mnist.yaml --digits 1 9

For each digit d: ``genlit fit`` the config on the 9,000-image train split without d (``held_out_classes: [d]``) for
``--steps`` steps, and the same config on the same data with ``mutation_rate`` (the background model of the
likelihood ratio, Ren et al. 2019), then ``genlit test`` on the 1,000-image test split with the background's
checkpoint as ``anomaly_background``: ``test/anomaly_auroc_<score>`` for every score, d the positives (about 100
images) against the other nine digits. Prints a table (digits by scores, then the mean) with the steps and wall
time of each run, and writes it as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import wandb

from benchmarks.args import positive_int
from genlit.cli import GenlitCLI
from genlit.metrics.anomaly import SCORES

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.limit_val_batches", "0",
         "--trainer.max_epochs", "-1"]  # fmt: skip


def fit(config: str, data: list[str], root: Path, steps: int, *extra: str) -> tuple[str, int, float]:
    """(the last checkpoint, steps, seconds) of ``genlit fit`` for ``steps`` steps."""
    start = time.perf_counter()
    cli = GenlitCLI(["fit", "--config", config, *data, *QUIET, "--trainer.default_root_dir", str(root),
                     "--trainer.max_steps", str(steps), *extra])  # fmt: skip
    seconds = time.perf_counter() - start
    wandb.finish()
    path = root / "final.ckpt"
    cli.trainer.save_checkpoint(path)
    return str(path), cli.trainer.global_step, seconds


def digit_row(config: str, digit: int, steps: int, mutation_rate: float | None, test_args: list[str]) -> dict:
    """Fit model and background (unless ``mutation_rate`` is None) without ``digit``, test with both: the AUROC
    of every score, steps and times."""
    data = ["--data.dataset", os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist"),
            "--data.held_out_classes", f"[{digit}]"]  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        model, model_steps, model_s = fit(config, data, Path(root) / "model", steps)
        with_background, bg_steps, bg_s = [], 0, 0.0
        if mutation_rate is not None:
            background, bg_steps, bg_s = fit(config, data, Path(root) / "background", steps,
                                             "--data.mutation_rate", str(mutation_rate))  # fmt: skip
            with_background = ["--model.anomaly_background", background]
        start = time.perf_counter()
        test = GenlitCLI(["test", "--config", config, *data, *QUIET, "--trainer.default_root_dir", root,
                          "--ckpt_path", model, *with_background, *test_args])  # fmt: skip
        test_s = time.perf_counter() - start
    metrics = test.trainer.callback_metrics
    row = {score: float(metrics[f"test/anomaly_auroc_{score}"]) for score in SCORES
           if f"test/anomaly_auroc_{score}" in metrics}  # fmt: skip
    timing = {"model_steps": model_steps, "model_s": model_s, "background_steps": bg_steps, "background_s": bg_s,
              "test_s": test_s, "test_nll": float(metrics["test/nll"])}  # fmt: skip
    return {"digit": digit, "auroc": row, **timing}


def main() -> None:
    """Every digit in turn; print the table and the means; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the experiment (a VAE, PixelCNN or flow YAML)")
    parser.add_argument("--steps", type=positive_int, default=1500, help="training steps of each model")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--mutation-rate", type=float, default=0.2, help="the background's input mutation rate")
    parser.add_argument("--no-background", action="store_true", help="no background model (no likelihood ratio)")
    parser.add_argument("--test-args", nargs=argparse.REMAINDER, default=[], help="more `genlit test` arguments")
    parser.add_argument("--out", default=None, help="JSON of the table (default: anomaly_digits_<config>.json)")
    args = parser.parse_args()
    rows = []
    for digit in args.digits:
        mutation_rate = None if args.no_background else args.mutation_rate
        rows.append(digit_row(args.config, digit, args.steps, mutation_rate, args.test_args))
        _print_row(rows[-1])
    scores = [s for s in SCORES if all(s in r["auroc"] for r in rows)]
    means = {s: sum(r["auroc"][s] for r in rows) / len(rows) for s in scores}
    print("mean over digits " + " ".join(f"{s} {v:.3f}" for s, v in means.items()))
    out = Path(args.out or f"anomaly_digits_{Path(args.config).stem}.json")
    out.write_text(json.dumps({"config": args.config, "steps": args.steps, "mutation_rate": args.mutation_rate,
                               "rows": rows, "mean": means}, indent=2))  # fmt: skip
    print(f"wrote {out}")


def _print_row(row: dict) -> None:
    aurocs = " ".join(f"{s} {v:.3f}" for s, v in row["auroc"].items())
    print(f"digit {row['digit']}: {aurocs} | test nll {row['test_nll']:.1f} | model {row['model_steps']} steps "
          f"{row['model_s']:.0f} s, background {row['background_steps']} steps {row['background_s']:.0f} s, "
          f"test {row['test_s']:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
