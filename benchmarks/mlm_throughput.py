"""Training steps/s of genlit's masked language model against a hand-written PyTorch loop doing the same work, in
one run (the method of ``benchmarks/gpt_throughput.py``: the loops take turns step by step, so a slow phase of the
machine hits both alike).

Model, batch and optimization of experiments/masked_lm/bert_shakespeare_char.yaml: the CPU GPT's blocks without the
causal mask (4 layers, 4 heads, 128 wide, context 64), batch 12, AdamW with decay groups, warm-up + cosine, clip
1.0, on Tiny Shakespeare's characters plus ``[MASK]``. Each step of either loop draws its own 15% of positions per
block and corrupts them 80/10/10. The plain loop draws random blocks as nanoGPT's ``get_batch`` does and writes the
corruption inline; genlit's goes through ``TextDataModule(mask_token=True)`` and a Lightning Trainer with genlit's
progress bar.

``--lightning-only`` puts the hand-written step itself in the Trainer's place of genlit's model (a
``training_step`` with manual optimization): what that loses against the same step called directly is Lightning's
loop, with no genlit code; the floor under genlit's ratio.

Two ways for genlit to shave its side: ``--num-workers N`` fetches genlit's batches in N loader processes (the
plain loop keeps drawing its blocks inside its step), ``--compile`` runs genlit's forward through
``torch.compile`` (the plain loop stays eager unless ``--compile-plain``).

    python -m benchmarks.mlm_throughput [--steps 300] [--warmup 30] [--repeats 5] [--lightning-only]
        [--num-workers 1] [--compile [--compile-plain]]
"""

from __future__ import annotations

import statistics
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks.gpt_throughput import PlainStepBetweenBatches, step_rates
from benchmarks.plain_gpt import BLOCK, CLIP, NET, WEIGHT_DECAY, adamw, random_blocks, schedule, shakespeare_path
from benchmarks.timing import quiet_trainer, report_ratio, throughput_parser
from genlit.data.text import TextDataModule
from genlit.families.masked_lm import MaskedLM
from genlit.nets.gpt import GPT
from genlit.optim import decay_groups

RATE = 0.15


def plain_mlm_training(corpus: torch.Tensor, vocab_size: int, batch_size: int, compile: bool = False):
    """A fresh bidirectional GPT and a function doing one hand-written masked-LM step on it (returns the loss). The
    mask is the last id, as in genlit's tokenizers."""
    net = GPT(vocab_size, BLOCK, **NET, causal=False)
    opt = adamw(decay_groups(net, WEIGHT_DECAY))
    sched = schedule(opt)
    mask_id, k = vocab_size - 1, round(RATE * BLOCK)
    forward = torch.compile(net) if compile else net

    def step() -> torch.Tensor:
        x, _ = random_blocks(corpus, batch_size)  # (B, T)
        chosen = torch.rand(x.shape).argsort(1).argsort(1) < k  # (B, T): k positions per row
        u = torch.rand(x.shape)
        inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), torch.randint(0, mask_id, x.shape), x)
        inputs = inputs.masked_fill(chosen & (u < 0.8), mask_id)
        loss = F.cross_entropy(forward(inputs)[chosen], x[chosen])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        sched.step()
        return loss

    return net, step


class PlainMLMStepInLightning(L.LightningModule):
    """The hand-written step as a Lightning ``training_step`` (manual optimization; Lightning's batch is dropped)."""

    def __init__(self, corpus: torch.Tensor, vocab_size: int, batch_size: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.plain_step = plain_mlm_training(corpus, vocab_size, batch_size)

    def training_step(self, batch, batch_idx) -> None:
        self.plain_step()

    def configure_optimizers(self) -> None:
        return None  # the step has its own optimizer


def interleaved_run(
    data: TextDataModule,
    steps: int,
    warmup: int,
    progress_bar: bool,
    lightning_only: bool = False,
    compile: bool = False,
    compile_plain: bool = False,
) -> PlainStepBetweenBatches:
    """A fresh genlit MaskedLM (or, ``lightning_only``, the plain step as a training step) under a Trainer and a
    fresh plain loop, stepping in turn; their step times."""
    corpus, batch_size = data.split_tokens("train"), data.hparams.batch_size
    _, plain_step = plain_mlm_training(corpus, data.vocab_size, batch_size, compile and compile_plain)
    turns = PlainStepBetweenBatches(plain_step, warmup)
    batches = warmup + steps + 1
    if lightning_only:  # no Lightning optimizer steps, so bound the batches, not the steps
        model = PlainMLMStepInLightning(corpus, data.vocab_size, batch_size)
        trainer = quiet_trainer(-1, turns, progress_bar, max_epochs=1, limit_train_batches=batches)
    else:
        net = partial(GPT, **NET, causal=False)
        model = MaskedLM(net, data.vocab_size, BLOCK, weight_decay=WEIGHT_DECAY, optimizer=adamw,
                         lr_scheduler=schedule, compile=compile)  # fmt: skip
        trainer = quiet_trainer(batches, turns, progress_bar, gradient_clip_val=CLIP)
    trainer.fit(model, datamodule=data)
    return turns


def main() -> None:
    """Run the loops in turn ``--repeats`` times; print steps/s and the ratios."""
    parser = throughput_parser(__doc__, batch_size=12)
    parser.add_argument("--lightning-only", action="store_true", help="the plain step in genlit's place")
    parser.add_argument("--num-workers", type=int, default=0, help="genlit's loader processes")
    parser.add_argument("--compile", action="store_true", help="genlit's forward through torch.compile")
    parser.add_argument("--compile-plain", action="store_true", help="with --compile: the plain loop's forward too")
    args = parser.parse_args()
    trained = "lightning" if args.lightning_only else "genlit"
    data = TextDataModule(str(shakespeare_path()), tokenizer="char", block_size=BLOCK, batch_size=args.batch_size,
                          mask_token=True, num_workers=args.num_workers)  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    print(f"batch {args.batch_size} x {BLOCK} tokens, vocabulary {data.vocab_size} (with [MASK]); "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")  # fmt: skip
    runs: dict[str, list[float]] = {}
    for r in range(args.repeats):
        torch.manual_seed(r)
        turns = interleaved_run(data, args.steps, args.warmup, not args.no_progress_bar, args.lightning_only,
                                args.compile, args.compile_plain)  # fmt: skip
        for name, rate in step_rates(turns, trained).items():
            runs.setdefault(name, []).append(rate)
        extra = statistics.median(g - p for g, p in zip(turns.trained, turns.plain[1:], strict=False))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()) + f" steps/s; {trained}'s step "
              f"{1000 * extra:.2f} ms longer than the plain step after it (median)", flush=True)  # fmt: skip
    print("median steps/s: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in runs.items()))
    report_ratio(runs, trained, "plain", note=" (median steps)")
    report_ratio(runs, f"{trained} mean", "plain mean", note=" (mean steps)")


if __name__ == "__main__":
    main()
