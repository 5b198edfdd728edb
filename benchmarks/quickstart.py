"""How long the README's quickstart takes, and what its run folder's extras cost, measured in one run.

    python -m benchmarks.quickstart [--steps 30000] [--repeats 1]

Runs ``genlit fit --config experiments/gan/toy_ring8.yaml`` (the quickstart) as a fresh process, as a user
would, in a temporary folder, three ways, alternating, ``--repeats`` times each:

- ``as in the README``: the YAML as it is (offline W&B, the metrics record ``metrics.csv`` and ``metrics.png``);
- ``no W&B``: ``--trainer.logger false`` (the metrics record stays: it is written whatever the logger);
- ``no W&B, no record``: also without the metrics record and its plot (patched out: nothing turns it off).

Prints the wall time of each (process start to exit, so imports and the end-of-fit plot count) and the ratios to
the README's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.args import positive_int

REPO = Path(__file__).resolve().parents[1]
WITHOUT_RECORD = (
    "import genlit.cli as cli; cli.with_record = lambda loggers, record: loggers; "
    "cli.GenlitCLI.after_fit = lambda self: None; cli.main()"
)
VARIANTS = {
    "as in the README": ([], False),
    "no W&B": (["--trainer.logger", "false"], False),
    "no W&B, no record": (["--trainer.logger", "false"], True),
}


def run_once(extra: list[str], without_record: bool, steps: int) -> float:
    """Wall seconds of one quickstart process in a fresh temporary folder."""
    config = str(REPO / "experiments" / "gan" / "toy_ring8.yaml")
    args = ["fit", "--config", config, "--trainer.max_steps", str(steps), "--trainer.enable_progress_bar", "false",
            *extra]  # fmt: skip
    command = [sys.executable, "-c", WITHOUT_RECORD, *args] if without_record else [sys.executable, "-m", "genlit.cli"]
    command += [] if without_record else args
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        if not without_record and not list(Path(folder).rglob("metrics.png")):
            raise RuntimeError("the quickstart wrote no metrics.png")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=30_000, help="the YAML's max_steps: 30,000")
    parser.add_argument("--repeats", type=positive_int, default=1)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, (extra, without_record) in VARIANTS.items():
            times[name].append(run_once(extra, without_record, args.steps))
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times["as in the README"])
    print(f"\nquickstart, {args.steps} steps, median of {args.repeats}:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:7.1f} s   ratio {median / base:.3f}")


if __name__ == "__main__":
    main()
