"""How stable is ``test/nll`` (the importance-weighted bound) at the default k? Trains vae_mnist briefly,
then evaluates the test NLL of the same checkpoint with k=1000 under two seeds and with k=2000.

    python -m benchmarks.vae_iw_stability [--max-time 00:00:03:00] [--num-test 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import wandb

from genlit.checkpoints import load_family
from genlit.cli import GenlitCLI
from genlit.data.images import ImageDataModule, to_model_space

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "vae" / "vae_mnist.yaml"


def test_nll(model, images: torch.Tensor, k: int, seed: int, batch: int = 100) -> float:
    """Mean negative IW bound (nats) over ``images`` (uint8 (N, 1, 28, 28)) with ``k`` samples."""
    model.hparams.iw_samples = k
    with torch.no_grad():  # the seed picks the test batches' draws (binarization and posterior samples)
        scores = [
            model.nll(to_model_space(images[i : i + batch]), batch_idx=seed * 100_003 + i // batch)
            for i in range(0, len(images), batch)
        ]
    return torch.cat(scores).mean().item()


def main() -> None:
    """Train, then print the NLL under two seeds and two values of k."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-time", default="00:00:03:00")
    parser.add_argument("--num-test", type=int, default=500)
    args = parser.parse_args()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    with tempfile.TemporaryDirectory() as root:
        fit = GenlitCLI(["fit", "--config", str(CONFIG), "--data.dataset", mnist, "--trainer.default_root_dir", root,
                         "--trainer.max_time", args.max_time, "--trainer.max_epochs", "-1",
                         "--trainer.enable_progress_bar", "false"])  # fmt: skip
        wandb.finish()
        model = load_family(fit.trainer.checkpoint_callback.best_model_path).eval()
    data = ImageDataModule(mnist)
    data.prepare_data()
    data.setup("test")
    images = data.test_dataloader().dataset.tensors[0][: args.num_test]
    runs = {"k=1000 seed 0": (1000, 0), "k=1000 seed 1": (1000, 1), "k=2000 seed 0": (2000, 0)}
    results = {name: test_nll(model, images, k, seed) for name, (k, seed) in runs.items()}
    for name, value in results.items():
        print(f"{name}: test NLL {value:.3f} nats ({len(images)} test images)")
    values = list(results.values())
    print(f"spread across seeds at k=1000: {abs(values[0] - values[1]):.3f} nats")
    print(f"change from k=1000 to k=2000: {values[0] - values[2]:.3f} nats")


if __name__ == "__main__":
    main()
