"""The whole CPU-recipe run as a user runs it, against a hand-written script doing the same work, alternating.

genlit: ``genlit fit --config experiments/autoregressive/gpt_shakespeare_char_cpu.yaml --seed_everything S``
in a child process (its run directory under a temporary root), timed from launch to exit: start-up, data,
2,000 steps, the 20-batch validation, text samples, checkpoint and logger included.

plain: this script with ``--plain-run`` in a child process, timed the same way. It imports torch and genlit's
GPT only, reads and encodes Tiny Shakespeare (characters, 90/10 contiguous split), trains 2,000 hand-written
steps (``benchmarks/plain_gpt.py``: the same model, batch and optimization) and estimates the validation loss
on 20 random batches, as nanoGPT's ``estimate_loss`` does; then it saves the weights.

Both final models are then evaluated, untimed, on the same blocks: the 20 validation batches genlit's run
reports (``limit_val_batches: 20`` of TextDataModule's fixed, scattered blocks) and the whole validation split.

    python -m benchmarks.gpt_cpu_recipe [--seeds 1337 1 2]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.plain_gpt import BLOCK, NET, char_splits, plain_training, random_blocks, validation_loss
from genlit.nets.gpt import GPT

CONFIG = "experiments/autoregressive/gpt_shakespeare_char_cpu.yaml"
STEPS, BATCH, VAL_BATCHES = 2000, 12, 20
ROOT = Path(__file__).resolve().parent.parent


def plain_run(seed: int, out: str) -> None:
    """The hand-written whole run (see the module docstring); saves the weights and the vocabulary to ``out``."""
    torch.manual_seed(seed)
    train, val, chars = char_splits()
    net, step = plain_training(train, len(chars), BATCH)
    for _ in range(STEPS):
        step()
    net.eval()
    with torch.no_grad():
        batches = [random_blocks(val, BATCH) for _ in range(VAL_BATCHES)]
        estimate = statistics.fmean(F.cross_entropy(net(x).flatten(0, 1), y.flatten()).item() for x, y in batches)
    print(f"step {STEPS}: val loss {estimate:.4f} (20 random batches)")
    torch.save({"net": net.state_dict(), "chars": chars, "estimate": estimate}, out)


def timed(command: list[str]) -> float:
    """Wall seconds of a child process (its output is kept in case it fails)."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def genlit_command(seed: int, root: Path) -> list[str]:
    """The user's ``genlit fit`` command line (what the console script runs), its run directory under ``root``."""
    genlit = "import sys; from genlit.cli import main; sys.argv[0] = 'genlit'; sys.exit(main())"
    args = ["fit", "--config", CONFIG, "--seed_everything", str(seed), "--trainer.default_root_dir", str(root)]
    return [sys.executable, "-c", genlit, *args]


def plain_command(seed: int, out: Path) -> list[str]:
    """This script's hand-written whole run, saving to ``out``."""
    return [sys.executable, "-m", "benchmarks.gpt_cpu_recipe", "--plain-run", "--seed", str(seed), "--out", str(out)]


def genlit_net(root: Path) -> tuple[GPT, str]:
    """The final net of the genlit run under ``root`` and its vocabulary."""
    from genlit.checkpoints import load_family

    (ckpt,) = root.glob("*/checkpoints/last.ckpt")
    model = load_family(ckpt)
    return model.net, model.tokenizer.chars


def plain_net(path: Path) -> tuple[GPT, str, float]:
    """The plain run's net, vocabulary and its own 20-random-batch estimate."""
    saved = torch.load(path, weights_only=True)
    net = GPT(len(saved["chars"]), BLOCK, **NET)
    net.load_state_dict(saved["net"])
    return net, saved["chars"], saved["estimate"]


def main() -> None:
    """Alternate the two whole runs per seed; print wall times, their ratio and the validation losses."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--plain-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1337, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_run:
        plain_run(args.seed, args.out)
        return

    from benchmarks.timing import shakespeare_data  # imports Lightning, which the plain run must not

    data = shakespeare_data(BATCH)
    print(f"{CONFIG}: {STEPS} steps of batch {BATCH} x {BLOCK}; {len(data.val_dataloader())} validation batches in all")
    print("columns: seed, wall s genlit / plain, ratio; val loss genlit / plain on the 20 batches, on the whole split;")
    print("         the plain run's own 20-random-batch estimate")
    rows = []
    for i, seed in enumerate(args.seeds):
        work = Path(tempfile.mkdtemp(prefix="gpt_cpu_recipe_"))
        try:
            commands = {"genlit": genlit_command(seed, work / "genlit")}
            commands["plain"] = plain_command(seed, work / "plain.pt")
            order = ["genlit", "plain"] if i % 2 == 0 else ["plain", "genlit"]
            seconds = {name: timed(commands[name]) for name in order}
            g_net, g_chars = genlit_net(work / "genlit")
            p_net, p_chars, estimate = plain_net(work / "plain.pt")
            if g_chars != p_chars:
                sys.exit("the two runs built different vocabularies; their losses would not compare")
            g20, gall = validation_loss(g_net, data.val_dataloader(), VAL_BATCHES)
            p20, pall = validation_loss(p_net, data.val_dataloader(), VAL_BATCHES)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        ratio = seconds["genlit"] / seconds["plain"]
        rows.append((seconds["genlit"], seconds["plain"], ratio, g20, p20, gall, pall, estimate))
        print(f"{seed:<6} " + _row(rows[-1]), flush=True)
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print("median " + _row(medians))
    print(f"(bits per char = loss / ln 2: genlit's whole-split median is {medians[5] / math.log(2):.3f} bits per char)")


def _row(r) -> str:
    return (
        f"{r[0]:6.1f} / {r[1]:6.1f} s  {r[2]:.3f}   20 batches {r[3]:.4f} / {r[4]:.4f}   "
        f"whole split {r[5]:.4f} / {r[6]:.4f}   plain's estimate {r[7]:.4f}"
    )


if __name__ == "__main__":
    main()
