"""Does CycleGAN keep the digit? Figures of ``experiments/gan/cyclegan_mnist_domains.yaml`` on the offline MNIST copy.

    python -m benchmarks.cyclegan_digits --out cyclegan_figures                # trains the experiment, then measures
    python -m benchmarks.cyclegan_digits --ckpt RUN/checkpoints/last.ckpt --out cyclegan_figures
    python -m benchmarks.cyclegan_digits --out f -- --trainer.max_steps 2000   # extra `genlit fit` options after --

On the test split of both domains (``$GENLIT_DATA_DIR/mnist``'s 1,000 test images: the first 500 grey, domain A; the
last 500 coloured, domain B; rows no model or evaluator trained on), with genlit's MNIST evaluator (a classifier
trained once on the train split and cached: ``evaluator:mnist_classifier``):

- digit preserved rate: the evaluator's label of the B -> A translation equals the coloured digit's true label
  (also apart for the images drawn on dark and on light backgrounds);
- references measured in the same run: the evaluator's accuracy on real A images (what a perfect translation could
  reach) and on the B images themselves made grey (their luminance: what no translation at all gives);
- cycle reconstruction L1 (in [-1, 1] units) of A -> B -> A and B -> A -> B;
- PNG grids both ways (inputs, translations, reconstructions) in ``--out``.

A figure names its steps (optimizer steps: G and D counted apart; batches = generator steps) and wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genlit.callbacks.translation_grid import translation_picture
from genlit.checkpoints import allowed_objects, load_family, read_checkpoint
from genlit.data.images import to_model_space
from genlit.data.unpaired import UnpairedImageDataModule
from genlit.imaging import save_png
from genlit.metrics.evaluators import evaluator, find_or_train

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "gan" / "cyclegan_mnist_domains.yaml"
GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 luminance weights


def train(mnist: str, out: Path, extra: list[str]) -> tuple[Path, float, float]:
    """``genlit fit`` of the experiment in a subprocess under ``out/runs``; (last.ckpt, wall seconds, CPU seconds of
    the subprocess: on a shared machine the wall time also counts the other processes' turns)."""
    root = out / "runs"
    before = set(root.glob("*")) if root.exists() else set()
    command = [sys.executable, "-m", "genlit.cli", "fit", "--config", str(EXPERIMENT), "--data.init_args.dataset",
               mnist, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
               *extra]  # fmt: skip
    start, cpu_start = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    (run,) = set(root.glob("*")) - before
    return run / "checkpoints" / "last.ckpt", wall, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_domains(ckpt: Path, mnist: str) -> UnpairedImageDataModule:
    """The checkpoint's own DataModule (rebuilt from its saved hyperparameters) on ``mnist``, test split loaded."""
    with torch.serialization.safe_globals(allowed_objects(ckpt)):
        data = UnpairedImageDataModule.load_from_checkpoint(ckpt, weights_only=True, dataset=mnist)
    data.prepare_data()
    data.setup("test")
    return data


def light_background(images: torch.Tensor) -> torch.Tensor:
    """Which colour images (N, 3, H, W) in [-1, 1] have a light background: the brightest channel of their 2-pixel
    frame averages above 0.575 (:class:`~genlit.data.domains.ColouredDigits` draws values in [0.75, 1] for light
    backgrounds, [0.1, 0.4] for dark ones)."""
    frame = torch.ones(images.shape[-2:], dtype=torch.bool)
    frame[2:-2, 2:-2] = False
    return ((images + 1) / 2).amax(1)[:, frame].mean(1) > 0.575  # (N,)


@torch.no_grad()
def measure(model, classifier, data: UnpairedImageDataModule, out: Path) -> dict[str, float]:
    """The figures of the module docstring on the test split; writes the two grids into ``out``."""
    (a8, label_a), (b8, label_b) = data.split_tensors("A", "test"), data.split_tensors("B", "test")
    a, b = to_model_space(a8), to_model_space(b8)  # (N, 1, 28, 28), (M, 3, 28, 28)
    ab, ba = model.translate(a, "AB"), model.translate(b, "BA")  # (N, 3, 28, 28), (M, 1, 28, 28)
    aba, bab = model.translate(ab, "BA"), model.translate(ba, "AB")

    def accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
        return (classifier(images).argmax(1) == labels).float().mean().item()

    luminance = ((b + 1) / 2 * GREY).sum(1, keepdim=True) * 2 - 1  # (M, 1, 28, 28)
    light = light_background(b)  # (M,)
    for name, rows in (("AB", (a[:16], ab[:16], aba[:16])), ("BA", (b[:16], ba[:16], bab[:16]))):
        save_png(translation_picture(*rows), out / f"translate_{name}.png")
    return {
        "digit preserved rate B->A": accuracy(ba, label_b),
        "  on dark backgrounds (bright strokes)": accuracy(ba[~light], label_b[~light]),
        "  on light backgrounds (dark strokes)": accuracy(ba[light], label_b[light]),
        "  light-background share": light.float().mean().item(),
        "reference: evaluator on real A": accuracy(a, label_a),
        "reference: evaluator on B's luminance (no translation)": accuracy(luminance, label_b),
        "evaluator on A->B->A": accuracy(aba, label_a),
        "cycle L1 A->B->A": F.l1_loss(aba, a).item(),
        "cycle L1 B->A->B": F.l1_loss(bab, b).item(),
        "test images A": float(len(a)),
        "test images B": float(len(b)),
    }


def main() -> None:
    """Train (or load) the experiment, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None, help="a trained checkpoint; default: train the experiment first")
    parser.add_argument("--out", default="cyclegan_figures", help="folder of the run (when training) and the grids")
    parser.add_argument("extra", nargs="*", help="`genlit fit` options after --, e.g. -- --trainer.max_steps 2000")
    args = parser.parse_args()
    if not os.environ.get("GENLIT_DATA_DIR"):
        parser.error("set GENLIT_DATA_DIR to the offline data folder (its mnist/ is read)")
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timing = ""
    ckpt = Path(args.ckpt) if args.ckpt else None
    if ckpt is None:
        ckpt, wall, cpu = train(mnist, out, args.extra)
        timing = f", whole `genlit fit` {wall:.0f} s wall ({cpu:.0f} s CPU)"
    model = load_family(ckpt, needs="translate").eval()
    classifier = load_family(find_or_train(evaluator("evaluator:mnist_classifier", mnist)), needs="features").eval()
    figures = measure(model, classifier, test_domains(ckpt, mnist), out)
    state = read_checkpoint(ckpt)
    trained = f"{state['global_step']} optimizer steps ({int(state['state_dict']['_generator_steps'])} batches)"
    print(f"cyclegan_mnist_domains: {trained}{timing}, torch threads {torch.get_num_threads()}; checkpoint {ckpt}")
    for name, value in figures.items():
        print(f"  {name}: {value:.4f}" if value < 2 else f"  {name}: {value:.0f}")
    print(f"  grids: {out / 'translate_AB.png'}, {out / 'translate_BA.png'}")


if __name__ == "__main__":
    main()
