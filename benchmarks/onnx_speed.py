"""ONNX Runtime against torch on CPU for the forward ``genlit export --format onnx`` writes, in one run.

Two models, each trained for one step (the speed of a forward does not depend on the weights) by ``genlit fit`` on
the offline data (``$GENLIT_DATA_DIR``) and exported (``--format safetensors onnx``):

- the DCGAN generator of ``experiments/gan/dcgan_mnist.yaml``: ``z`` (B, 100) -> images (B, 1, 28, 28), samples/s;
- the GPT of ``experiments/autoregressive/gpt_shakespeare_char_cpu.yaml``: token ids (B, 64) -> logits, tokens/s of
  the full forward (the graph has no key/value cache: this is the prefill, not cached token-by-token generation).

For each: torch (the exported model as ``genlit.load`` builds it, eval mode, no gradients) and an ONNX Runtime CPU
session with torch's thread count run the same inputs, alternately, for ``--seconds`` each per repeat; the medians
and the median of the per-repeat ratios are printed, with the number of calls. Then the size of the checkpoint and of
the export folder, and their load times (``genlit.load`` of each, and an ONNX Runtime session of ``model.onnx``),
alternated too. Run it with ``OMP_NUM_THREADS`` set (it sets both libraries' threads).

    OMP_NUM_THREADS=1 python -m benchmarks.onnx_speed [--repeats 5] [--seconds 2] [--batch-size 64] [--gpt-batch 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import genlit
from benchmarks.args import positive_int
from benchmarks.timing import report_ratio
from genlit.cli import main as genlit_main
from genlit.commands.export import export
from genlit.commands.onnx_export import ONNX_FILE, inference_session, onnx_graph_of, random_inputs

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

ONE_STEP = ["--trainer.max_steps", "1", "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
            "init_args: {save_last: true}}]"]  # fmt: skip


def trained_export(config: str, root: Path, *overrides: str) -> tuple[Path, Path]:
    """``genlit fit`` ``config`` for one step under ``root`` and export its checkpoint with ONNX; (checkpoint,
    export folder)."""
    genlit_main(["fit", "--config", str(EXPERIMENTS / config), "--trainer.default_root_dir", str(root / "runs"),
                 *ONE_STEP, *overrides])  # fmt: skip
    (ckpt,) = (root / "runs").glob("*/checkpoints/last.ckpt")
    return ckpt, export(ckpt, root / "export", formats=("safetensors", "onnx"))


def timed(call: Callable[[], object], seconds: float) -> tuple[int, float]:
    """(calls, wall seconds) of calling ``call`` repeatedly for about ``seconds`` (after two warm-up calls)."""
    call(), call()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    return calls, time.perf_counter() - start


def compare_speed(folder: Path, batch: int, length: int | None, unit: str, args) -> None:
    """Alternate torch and ONNX Runtime on the same inputs; print items/s (``unit``: samples or tokens) and ratio."""
    model = genlit.load(folder).eval()
    graph, session = onnx_graph_of(model), inference_session(folder / ONNX_FILE)
    inputs = random_inputs(graph, batch, length)
    feed = {spec.name: t.numpy() for spec, t in zip(graph.inputs, inputs, strict=True)}
    per_call = batch * (length or 1)

    def torch_call():
        with torch.no_grad():
            return graph.module(*inputs)

    calls = {"torch": torch_call, "onnxruntime": lambda: session.run(None, feed)}
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.repeats):
        line = []
        for name, call in calls.items():
            n, seconds = timed(call, args.seconds)
            rates[name].append(n * per_call / seconds)
            line.append(f"{name} {rates[name][-1]:,.0f} {unit}/s ({n} calls in {seconds:.2f} s)")
        print(f"repeat {r}: " + ", ".join(line))
    print("median: " + ", ".join(f"{k} {statistics.median(v):,.0f} {unit}/s" for k, v in rates.items()))
    report_ratio(rates, "onnxruntime", "torch")


def compare_files(ckpt: Path, folder: Path, repeats: int) -> None:
    """Sizes of the checkpoint and of the export folder (by file), and their load times, alternated."""
    mb = 1024**2
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    each = ", ".join(f"{k} {v / mb:.2f} MB" for k, v in sorted(files.items()))
    print(f"size: checkpoint {ckpt.stat().st_size / mb:.2f} MB (weights, optimizer state, EMA if kept); export folder "
          f"{sum(files.values()) / mb:.2f} MB: {each}")  # fmt: skip
    loads = {"checkpoint (genlit.load)": lambda: genlit.load(ckpt), "export (genlit.load)": lambda: genlit.load(folder),
             "model.onnx (onnxruntime session)": lambda: inference_session(folder / ONNX_FILE)}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in loads}
    for load in loads.values():
        load()  # imports and caches warmed
    for _ in range(repeats):
        for name, load in loads.items():
            start = time.perf_counter()
            load()
            times[name].append(time.perf_counter() - start)
    print(f"load (median of {repeats}): " + ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms"
                                                       for k, v in times.items()))  # fmt: skip


def main() -> None:
    """Train, export and compare both models."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per library and repeat")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="DCGAN samples per call")
    parser.add_argument("--gpt-batch", type=positive_int, default=8, help="GPT sequences (of 64 tokens) per call")
    args = parser.parse_args()
    sys.argv[1:] = []  # genlit fit below is given its own arguments
    if "GENLIT_DATA_DIR" not in os.environ:
        raise SystemExit("set GENLIT_DATA_DIR to the shared data folder (mnist, tinyshakespeare)")
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        mnist = ["--data.init_args.dataset", os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")]
        gan = trained_export("gan/dcgan_mnist.yaml", Path(tmp, "gan"), *mnist)
        gpt = trained_export("autoregressive/gpt_shakespeare_char_cpu.yaml", Path(tmp, "gpt"))
        print(f"\n== DCGAN generator (dcgan_mnist.yaml), batch {args.batch_size}")
        compare_speed(gan[1], args.batch_size, None, "samples", args)
        compare_files(*gan, args.repeats)
        block = genlit.load(gpt[1]).hparams.block_size
        print(f"\n== GPT forward (gpt_shakespeare_char_cpu.yaml), batch {args.gpt_batch} x {block} tokens")
        compare_speed(gpt[1], args.gpt_batch, block, "tokens", args)
        compare_files(*gpt, args.repeats)


if __name__ == "__main__":
    main()
