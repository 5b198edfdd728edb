"""Time to loss, whole runs side by side: nanoGPT's 2022 CPU recipe (a hand-written loop) against
``genlit fit --config experiments/autoregressive/gpt_shakespeare_char_cpu_fast.yaml`` (the modern recipe).

plain: this script with ``--plain-run`` in a child process, the loop of ``benchmarks/gpt_cpu_recipe.py`` (which
matches nanoGPT: 2,000 steps of batch 12 x 64, AdamW, warm-up + cosine, its 20-random-batch estimate at the end).
genlit: the user's ``genlit fit`` command in a child process, with one callback added to the experiment's YAML.
Both are timed from launch to exit; both take a snapshot of the net's weights (and the wall clock) every
``--every`` steps, which costs a copy of 0.8 M floats. After both have exited, every snapshot is scored, untimed,
on the *whole* validation split (TextDataModule's non-overlapping 64-character blocks, the CPU recipe's), giving
the loss-against-time curve of each run.

Target (the language-models issue): genlit reaches the plain run's final whole-split loss in at most 0.6x the plain
run's wall time, and ends below it. The reaching time is interpolated linearly between snapshots.

    python -m benchmarks.gpt_fast_recipe [--seeds 1337] [--every 100] [--plot loss_vs_time.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml

from benchmarks.plain_gpt import BLOCK, NET, char_splits, plain_training, random_blocks, validation_loss
from genlit.nets.gpt import GPT

FAST = "experiments/autoregressive/gpt_shakespeare_char_cpu_fast.yaml"
STEPS, BATCH, VAL_BATCHES = 2000, 12, 20
ROOT = Path(__file__).resolve().parent.parent


class Snapshots(L.Callback):
    """Copies of the net's weights and the wall clock (``time.time()``) every ``every`` optimizer steps and at the
    end of training, saved to ``out`` when fitting ends."""

    def __init__(self, every: int, out: str) -> None:
        self.every, self.out, self.items = every, out, []

    def _take(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        self.items.append((time.time(), trainer.global_step, state))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """A snapshot every ``every`` steps."""
        if trainer.global_step % self.every == 0:
            self._take(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        """The last weights (unless just taken), then everything to ``out``."""
        if not self.items or self.items[-1][1] != trainer.global_step:
            self._take(trainer, pl_module)
        torch.save({"items": self.items, "chars": pl_module.tokenizer.chars}, self.out)


def plain_run(seed: int, out: str, every: int) -> None:
    """The hand-written whole run with snapshots (see the module docstring)."""
    torch.manual_seed(seed)
    train, val, chars = char_splits()
    net, step = plain_training(train, len(chars), BATCH)
    items = []
    for i in range(1, STEPS + 1):
        step()
        if i % every == 0 or i == STEPS:
            items.append((time.time(), i, {k: v.detach().clone() for k, v in net.state_dict().items()}))
    net.eval()
    with torch.no_grad():
        batches = [random_blocks(val, BATCH) for _ in range(VAL_BATCHES)]
        estimate = statistics.fmean(F.cross_entropy(net(x).flatten(0, 1), y.flatten()).item() for x, y in batches)
    print(f"step {STEPS}: val loss {estimate:.4f} (20 random batches)")
    torch.save({"items": items, "chars": chars}, out)


def genlit_config(work: Path, every: int) -> Path:
    """The fast experiment's YAML with the snapshot callback added and the run directory under ``work``."""
    config = yaml.safe_load((ROOT / FAST).read_text())
    config["trainer"]["default_root_dir"] = str(work / "genlit")
    snapshot = {"class_path": "benchmarks.gpt_fast_recipe.Snapshots",
                "init_args": {"every": every, "out": str(work / "genlit.pt")}}  # fmt: skip
    config["trainer"]["callbacks"] = [*config["trainer"].get("callbacks", []), snapshot]
    path = work / "fast.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """(launch time, wall seconds) of a child process (its output is kept in case it fails)."""
    # jsonargparse parses a config file from the file's folder, so the callback's module must be on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    launch = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.time() - launch
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return launch, seconds


def curve(path: Path, launch: float, net_args: dict, data) -> list[tuple[float, int, float]]:
    """(seconds since launch, step, whole-split validation loss) of every snapshot in ``path``."""
    saved = torch.load(path, weights_only=True)
    points = []
    for stamp, step, state in saved["items"]:
        net = GPT(len(saved["chars"]), BLOCK, **net_args)
        net.load_state_dict(state)
        points.append((stamp - launch, step, validation_loss(net, data.val_dataloader(), VAL_BATCHES)[1]))
    return points


def reaching_time(points: list[tuple[float, int, float]], target: float) -> float | None:
    """The first time the curve reaches ``target`` (linear between snapshots), or None if it never does."""
    for (t0, _, l0), (t1, _, l1) in zip(points, points[1:], strict=False):
        if l1 <= target:
            return t1 if l0 <= target else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return points[0][0] if points and points[0][2] <= target else None


def main() -> None:
    """Alternate the two whole runs per seed; print both curves, the reaching time and its ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--every", type=int, default=100, help="steps between snapshots")
    parser.add_argument("--plot", default=None, help="write the loss-against-time curves to this PNG")
    parser.add_argument("--plain-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1337, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_run:
        plain_run(args.seed, args.out, args.every)
        return

    from benchmarks.timing import shakespeare_data

    data = shakespeare_data(BATCH)
    fast = yaml.safe_load((ROOT / FAST).read_text())
    fast_net = fast["model"]["init_args"]["net"]["init_args"]
    genlit = "import sys; from genlit.cli import main; sys.argv[0] = 'genlit'; sys.exit(main())"
    rows, curves = [], {}
    for i, seed in enumerate(args.seeds):
        work = Path(tempfile.mkdtemp(prefix="gpt_fast_recipe_"))
        try:
            config = genlit_config(work, args.every)
            commands = {
                "genlit": [
                    sys.executable,
                    "-c",
                    genlit,
                    "fit",
                    "--config",
                    str(config),
                    "--seed_everything",
                    str(seed),
                ],  # fmt: skip
                "plain": [
                    sys.executable,
                    "-m",
                    "benchmarks.gpt_fast_recipe",
                    "--plain-run",
                    "--seed",
                    str(seed),
                    "--out",
                    str(work / "plain.pt"),
                    "--every",
                    str(args.every),
                ],  # fmt: skip
            }
            order = ["plain", "genlit"] if i % 2 == 0 else ["genlit", "plain"]
            runs = {name: timed(commands[name]) for name in order}
            curves = {
                "plain": curve(work / "plain.pt", runs["plain"][0], NET, data),
                "genlit": curve(work / "genlit.pt", runs["genlit"][0], fast_net, data),
            }
        finally:
            shutil.rmtree(work, ignore_errors=True)
        target = curves["plain"][-1][2]
        reach = reaching_time(curves["genlit"], target)
        wall = {name: runs[name][1] for name in runs}
        for name in ("plain", "genlit"):
            print(f"seed {seed} {name}: wall {wall[name]:.1f} s; (seconds since launch, step, whole-split val loss):")
            print("  " + "  ".join(f"({t:.1f}, {s}, {loss:.4f})" for t, s, loss in curves[name]))
        ratio = None if reach is None else reach / wall["plain"]
        rows.append((wall["plain"], wall["genlit"], target, curves["genlit"][-1][2], reach, ratio))
        reached = "never" if reach is None else f"{reach:.1f} s, {ratio:.3f}x the plain run's wall time"
        print(f"seed {seed}: plain ends at {target:.4f} after {wall['plain']:.1f} s; genlit ends at "
              f"{curves['genlit'][-1][2]:.4f} after {wall['genlit']:.1f} s and reaches {target:.4f} at {reached}",
              flush=True)  # fmt: skip
        if args.plot:  # one picture per seed: PATH, then PATH_<seed>.png for the later seeds
            path = Path(args.plot)
            _plot(curves, str(path if i == 0 else path.with_name(f"{path.stem}_{seed}{path.suffix}")), seed)
    ratios = [r[5] for r in rows if r[5] is not None]
    if ratios:
        print(f"median ratio (time for genlit to reach plain's final loss / plain's wall time): "
              f"{statistics.median(ratios):.3f} over {len(ratios)} of {len(rows)} seeds (target <= 0.6)")  # fmt: skip


def _plot(curves: dict, path: str, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"plain": "2022 recipe (nanoGPT loop)", "genlit": "modern recipe (genlit fit)"}
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", ms=3, label=labels[name])
    ax.axhline(curves["plain"][-1][2], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="seconds since launch", ylabel="whole-split validation loss (nats/char)", ylim=(1.4, 2.8),
           title=f"Tiny Shakespeare, char GPT, seed {seed}")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
