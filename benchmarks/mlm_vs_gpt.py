"""GPT against BERT on the same characters: ``gpt_shakespeare_char_cpu`` and ``bert_shakespeare_char`` trained by
``genlit.fit`` (equal size, data, batch, optimizer and steps), then scored, untimed, on the same validation blocks.

GPT: bits per char of next-character prediction, ``-log2 p(c_t | c_<t)`` over the characters ``y`` of each
validation block (x, y). BERT: the pseudo-log-likelihood bits per char of the same characters ``y`` (each scored
with the other 63 of its block visible, Salazar et al. 2020), and the fill-mask top-1 accuracy at the characters the
80/10/10 corruption replaced by ``[MASK]`` (15% chosen per block, fixed seeds). The blocks are the first
``--blocks`` of TextDataModule's fixed, scattered validation order (a PLL block costs 64 forwards).

    python -m benchmarks.mlm_vs_gpt [--steps 2000] [--blocks 240]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import genlit
from benchmarks.timing import shakespeare_data

CONFIGS = {
    "gpt": "experiments/autoregressive/gpt_shakespeare_char_cpu.yaml",
    "bert": "experiments/masked_lm/bert_shakespeare_char.yaml",
}


def train(config: str, steps: int):
    """The model of ``config`` after ``steps`` steps (no logger or validation; run folder in a temporary
    directory), and the wall seconds of the fit."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        run = genlit.fit(config, trainer={"max_steps": steps, "limit_val_batches": 0, "logger": False},
                         run_dir=Path(work) / "run")  # fmt: skip
    return run.model.eval(), time.perf_counter() - start


@torch.no_grad()
def main() -> None:
    """Train both, score both on the same blocks, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=240, help="validation blocks scored")
    args = parser.parse_args()
    blocks = []
    for x, y in shakespeare_data(12).val_dataloader():
        blocks.append((x, y))
        if sum(len(b[0]) for b in blocks) >= args.blocks:
            break
    gpt, gpt_s = train(CONFIGS["gpt"], args.steps)
    bert, bert_s = train(CONFIGS["bert"], args.steps)
    gpt_nats = sum(gpt.token_nll(x, y).sum().item() for x, y in blocks)
    bert_nats = sum(bert.pseudo_nll(y).sum().item() for _, y in blocks)
    correct = torch.cat([bert.masked_loss(y, torch.Generator().manual_seed(i))[1] for i, (_, y) in enumerate(blocks)])
    chars = sum(y.numel() for _, y in blocks)
    params = {name: sum(p.numel() for p in m.net.parameters()) for name, m in (("gpt", gpt), ("bert", bert))}
    print(f"{args.steps} steps each, batch 12 x 64; scored on {chars} validation characters ({len(blocks)} batches)")
    print(f"GPT  (gpt_shakespeare_char_cpu): {params['gpt']:,} parameters, fit {gpt_s:.0f} s, "
          f"{gpt_nats / chars / math.log(2):.3f} bits per char (next character)")  # fmt: skip
    print(f"BERT (bert_shakespeare_char):    {params['bert']:,} parameters, fit {bert_s:.0f} s, "
          f"{bert_nats / chars / math.log(2):.3f} bits per char (pseudo-log-likelihood), fill-mask top-1 "
          f"{correct.float().mean():.3f} on {len(correct)} masked characters")  # fmt: skip


if __name__ == "__main__":
    main()
