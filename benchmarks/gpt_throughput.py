"""Training tokens/s of genlit's GPT against a hand-written PyTorch loop doing the same work, in one run, and the
model FLOPs utilization (MFU) of both against the float32 matmul peak this script measures on the machine.

Model, batch and optimization of experiments/autoregressive/gpt_shakespeare_char_cpu.yaml (nanoGPT's CPU recipe:
4 layers, 4 heads, 128 wide, context 64, batch 12, AdamW with decay groups, warm-up + cosine, clip 1.0) on
``$GENLIT_DATA_DIR/tinyshakespeare/input.txt``, character tokens. The plain loop draws random blocks as nanoGPT's
``get_batch`` does; genlit's goes through ``TextDataModule`` and a Lightning Trainer with genlit's progress bar.

The two loops take turns step by step: after each genlit batch a callback runs one step of the plain loop (its
own model and optimizer) and times it; a genlit step is the time from one batch end to the next, less that plain
step. So a slow phase of the machine (these shared 2-core machines drift by 20% and more within a minute) hits
both loops alike, which alternating whole runs did not ensure. Each repeat is a fresh pair of models.

Two rates per loop and repeat: from the median step time, and from the mean. Single steps of either loop stall
now and then for up to seconds when the host is busy (the stall, not the loop, then sets the mean), so the ratio
of median steps is the headline; the mean ratio, which also charges genlit's rarer costs (the progress bar's
redraws, a few per second), is printed beside it, with the median paired difference of adjacent steps in ms.

``--lightning-only`` puts the hand-written step itself, unchanged, in the Trainer's place of genlit's model (as
the ``training_step`` of a LightningModule with manual optimization; the batch Lightning fetches is dropped). What
it is slower than the same step called directly is what Lightning's loop costs per step, with no genlit code.

    python -m benchmarks.gpt_throughput [--steps 300] [--warmup 30] [--repeats 5] [--batch-size 12] [--lightning-only]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import lightning as L
import torch

from benchmarks.plain_gpt import BLOCK, CLIP, NET, WEIGHT_DECAY, adamw, plain_training, schedule
from benchmarks.timing import quiet_trainer, report_ratio, shakespeare_data, throughput_parser
from genlit.data.text import TextDataModule
from genlit.families.autoregressive import AutoregressiveLM
from genlit.nets.gpt import GPT


class PlainStepBetweenBatches(L.Callback):
    """Runs one step of a hand-written loop after every training batch of the Trainer and records the wall time of both
    steps (seconds), leaving out the first ``warmup`` of each."""

    def __init__(self, plain_step: Callable[[], object], warmup: int) -> None:
        self.plain_step, self.warmup = plain_step, warmup
        self.trained: list[float] = []
        self.plain: list[float] = []
        self._batches, self._mark = 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batches > self.warmup:
            self.trained.append(now - self._mark)  # the Trainer's step since the last plain one ended
        start = time.perf_counter()
        self.plain_step()
        if self._batches >= self.warmup:
            self.plain.append(time.perf_counter() - start)
        self._batches += 1
        self._mark = time.perf_counter()


class PlainStepInLightning(L.LightningModule):
    """The hand-written step as a Lightning ``training_step`` (manual optimization; Lightning's batch is dropped)."""

    def __init__(self, corpus: torch.Tensor, vocab_size: int, batch_size: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.plain_step = plain_training(corpus, vocab_size, batch_size)

    def training_step(self, batch, batch_idx) -> None:
        self.plain_step()

    def configure_optimizers(self) -> None:
        return None  # the step has its own optimizer


def interleaved_run(
    data: TextDataModule, steps: int, warmup: int, progress_bar: bool, lightning_only: bool = False
) -> PlainStepBetweenBatches:
    """A fresh genlit model under a Trainer (or, ``lightning_only``, the plain step as its training step) and a
    fresh plain one, stepping in turn; their step times."""
    corpus, batch_size = data.split_tokens("train"), data.hparams.batch_size
    _, plain_step = plain_training(corpus, data.vocab_size, batch_size)
    turns = PlainStepBetweenBatches(plain_step, warmup)
    batches = warmup + steps + 1
    if lightning_only:  # no Lightning optimizer steps, so bound the batches, not the steps
        model, limits = PlainStepInLightning(corpus, data.vocab_size, batch_size), {"limit_train_batches": batches}
        trainer = quiet_trainer(-1, turns, progress_bar, max_epochs=1, **limits)
    else:
        model = AutoregressiveLM(
            partial(GPT, **NET), data.vocab_size, BLOCK, WEIGHT_DECAY, optimizer=adamw, lr_scheduler=schedule
        )
        trainer = quiet_trainer(batches, turns, progress_bar, gradient_clip_val=CLIP)
    trainer.fit(model, datamodule=data)
    return turns


def step_rates(turns: PlainStepBetweenBatches, trained: str) -> dict[str, float]:
    """Steps/s of each loop from its median step (``<loop>``) and from its mean step (``<loop> mean``); the
    Trainer's loop is called ``trained``."""
    rates = {}
    for name, times in (("plain", turns.plain), (trained, turns.trained)):
        rates[name] = 1 / statistics.median(times)
        rates[f"{name} mean"] = len(times) / sum(times)
    return rates


def matmul_peak(size: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a (size x size) @ (size x size) matmul on ``device`` in ``dtype`` (float32 on the CPU by default),
    best of ``repeats``; CUDA work is synchronised around each timing."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    """Run the loops in turn ``--repeats`` times; print steps/s, tokens/s, the ratios and MFU."""
    parser = throughput_parser(__doc__, batch_size=12)
    parser.add_argument("--lightning-only", action="store_true", help="the plain step in genlit's place")
    args = parser.parse_args()
    data = shakespeare_data(args.batch_size)
    print(f"batch {args.batch_size} x {BLOCK} tokens, vocabulary {data.vocab_size}; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    trained = "lightning" if args.lightning_only else "genlit"
    runs: dict[str, list[float]] = {}
    for r in range(args.repeats):
        torch.manual_seed(r)
        turns = interleaved_run(data, args.steps, args.warmup, not args.no_progress_bar, args.lightning_only)
        for name, rate in step_rates(turns, trained).items():
            runs.setdefault(name, []).append(rate)
        extra = statistics.median(g - p for g, p in zip(turns.trained, turns.plain[1:], strict=False))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()) + f" steps/s; {trained}'s "
              f"step {1000 * extra:.2f} ms longer than the plain step after it (median)")  # fmt: skip
    print("median steps/s: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in runs.items()))
    report_ratio(runs, trained, "plain", note=" (median steps)")
    report_ratio(runs, f"{trained} mean", "plain mean", note=" (mean steps)")
    peak = matmul_peak()
    flops = GPT(data.vocab_size, BLOCK, **NET).flops_per_token()
    tokens = args.batch_size * BLOCK
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32, 2048^3); model {flops / 1e6:.2f} MFLOP/token")
    for name in ("plain", trained):
        rate = statistics.median(runs[name]) * tokens
        print(f"{name}: {rate:,.0f} tokens/s (median steps), MFU {rate * flops / peak:.1%}")


if __name__ == "__main__":
    main()
