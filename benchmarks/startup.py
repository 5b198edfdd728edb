"""Start-up and exit cost of what a ``genlit fit`` run imports, each in a fresh interpreter.

For each module set: the seconds to import it, and the seconds from the end of the import until the process
has exited (interpreter finalization), medians over ``--repeats`` fresh processes. ``python -c pass`` is the
baseline. These fixed costs are part of every whole-run wall time (``benchmarks/gpt_cpu_recipe.py``).

    python -m benchmarks.startup [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from benchmarks.args import positive_int

TARGETS = {
    "python": "",
    "torch": "import torch",
    "lightning": "import lightning",
    "genlit CLI + LM family": "import genlit.cli, genlit.families.autoregressive, genlit.data.text",
}


def measure(statement: str) -> tuple[float, float]:
    """(import seconds, exit seconds) of ``statement`` in a fresh interpreter."""
    code = f"import time\nstart = time.time()\n{statement}\nprint(start, time.time(), flush=True)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    exited = time.time()
    start, imported = map(float, result.stdout.split())
    return imported - start, exited - imported


def main() -> None:
    """Print the median import and exit seconds of each target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in TARGETS}
    for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every target alike
        for name, statement in TARGETS.items():
            runs[name].append(measure(statement))
    for name, pairs in runs.items():
        imports, exits = zip(*pairs, strict=True)
        print(f"{name:<24} import {statistics.median(imports):5.2f} s   exit {statistics.median(exits):5.2f} s")


if __name__ == "__main__":
    main()
