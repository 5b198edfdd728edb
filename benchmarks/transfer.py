"""Fine-tuning from a pre-trained model against training from scratch at equal steps, for images and for text.

    python -m benchmarks.transfer [--image-pretrain-steps 2500] [--image-steps 800] [--text-pretrain-steps 1500]
        [--text-steps 300] [--num 1000] [--only images|text] [--out transfer.json]

Images (``experiments/finetune/dcgan_digits*.yaml``, ``$GENLIT_DATA_DIR/mnist``): dcgan_mnist's DCGAN pre-trained for
``--image-pretrain-steps`` generator steps on the digits 0-4 of the train split, then trained for ``--image-steps``
generator steps on the first 500 training images of 5-9 twice: from the pre-trained weights (``init_from``) and
from scratch. Each model's EMA generator draws ``--num`` samples (seed 0) scored with genlit's MNIST evaluator
against the test images of 5-9 (486 of the 1,000): FID, KID, and the share of samples the evaluator reads as 5-9.
``genlit evaluate`` compares with a whole split, so the reference here is built from the same pieces
(:func:`genlit.commands.evaluate.evaluate` on the evaluator's features of those images). Two reference rows: the
pre-trained model itself (0 steps on 5-9) and the 500 training images themselves (the figure of real data).

Text (``experiments/finetune/gpt_*.yaml``, ``$GENLIT_DATA_DIR/tinyshakespeare/input.txt``): the CPU character GPT
pre-trained for ``--text-pretrain-steps`` on every speech but GLOUCESTER's (the most frequent speaker; the corpora
come from :mod:`genlit.data.speakers`), then trained for ``--text-steps`` on GLOUCESTER's lines alone: fine-tuned
(every weight), fine-tuned with LoRA (``gpt_speaker_lora.yaml``, when it exists and ``peft`` is installed), and from
scratch, all with the pre-trained tokenizer. Each is scored on GLOUCESTER's validation text (the last 10% of his
lines, never trained on) and on the other speakers' validation text (what fine-tuning forgot): bits per character
over every non-overlapping block, as ``genlit evaluate`` measures them.

Every run is ``genlit fit`` of its YAML (no logger, callbacks or validation; the learning-rate schedules shortened
to the steps asked for). Printed: each run's steps and wall time (launch to return, start-up included) and its
scores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import wandb

from benchmarks.args import positive_int
from genlit.checkpoints import load_family
from genlit.cli import GenlitCLI
from genlit.commands.evaluate import evaluate, text_record
from genlit.commands.sample import draw
from genlit.data.images import ImageDataModule
from genlit.data.speakers import write_speaker_corpora
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor
from genlit.metrics.features import extract

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "finetune"
TARGET = (5, 6, 7, 8, 9)  # the digits fine-tuned on (and scored); the pre-training sees the others
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.limit_val_batches", "0",
         "--trainer.max_epochs", "-1"]  # fmt: skip


def fit(config: str, root: Path, steps: int, *extra: str) -> tuple[str, int, float]:
    """(the final checkpoint, optimizer steps, wall seconds) of ``genlit fit`` of ``config`` for ``steps`` steps."""
    start = time.perf_counter()
    cli = GenlitCLI(["fit", "--config", str(CONFIGS / config), *QUIET, "--trainer.default_root_dir", str(root),
                     "--trainer.max_steps", str(steps), *extra])  # fmt: skip
    seconds = time.perf_counter() - start
    wandb.finish()
    path = root / "final.ckpt"  # last.ckpt lags when max_steps stops mid-epoch
    cli.trainer.save_checkpoint(path, weights_only=False)  # the whole checkpoint, as genlit fit writes
    return str(path), cli.trainer.global_step, seconds


def schedule(steps: int, warmup: int) -> list[str]:
    """The GPT experiments' warm-up and cosine decay fitted to a run of ``steps`` steps."""
    return ["--model.lr_scheduler.init_args.decay_steps", str(steps),
            "--model.lr_scheduler.init_args.warmup_steps", str(min(warmup, steps // 10))]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ images
class DigitScore:
    """Scores of uint8 images (N, 1, 28, 28) against the test images of the digits ``TARGET``, with genlit's MNIST
    evaluator: FID, KID and the share of images it classifies as one of ``TARGET``."""

    def __init__(self, mnist: str) -> None:
        self.extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
        test = ImageDataModule(mnist)
        test.prepare_data()
        test.setup("test")
        images, labels = test.split_tensors("test")
        keep = torch.isin(labels, torch.tensor(TARGET))  # (N,)
        self.num_reference = int(keep.sum())
        self.reference = extract(self.extractor, images[keep])  # (features, logits) of the target test images

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        metrics = evaluate(images, None, self.extractor, self.reference, kid_subset_size=min(len(images), 500))
        _, logits = extract(self.extractor, images)  # (N, 10)
        share = torch.isin(logits.argmax(1), torch.tensor(TARGET)).float().mean().item()
        return {"fid": metrics["fid"], "kid": metrics["kid_mean"], "target_share": share}


def samples_of(ckpt: str, num: int) -> torch.Tensor:
    """uint8 (num, C, H, W) drawn from the checkpoint's EMA generator, samples 0..num-1 under seed 0."""
    model = load_family(ckpt).eval()
    with torch.no_grad():
        images, _ = draw(model, num, seed=0, batch_size=250)
    return to_uint8(images).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def training_images(mnist: str) -> torch.Tensor:
    """The 500 training images of 5-9 that the fine-tuning runs see, uint8 (500, 1, 28, 28)."""
    data = ImageDataModule(mnist, held_out_classes=[d for d in range(10) if d not in TARGET], train_limit=500)
    data.prepare_data()
    data.setup("fit")
    return data.split_tensors("train")[0]


def image_rows(args, root: Path) -> list[dict]:
    """Pre-train on 0-4, then fine-tune and scratch on 500 images of 5-9, equal steps; a scored row for each."""
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    data, score = ["--data.dataset", mnist], DigitScore(mnist)
    pre, pre_steps, pre_s = fit("dcgan_digits04_pretrain.yaml", root / "pretrain", 2 * args.image_pretrain_steps, *data)
    runs = [("pre-trained on 0-4 (no step on 5-9)", pre, 0, 0.0)]
    for name, config, extra in (("fine-tuned", "dcgan_digits59_finetune.yaml", ["--model.init_from", pre]),
                                ("from scratch", "dcgan_digits59_scratch.yaml", [])):  # fmt: skip
        ckpt, steps, seconds = fit(config, root / name.replace(" ", "_"), 2 * args.image_steps, *data, *extra)
        runs.append((name, ckpt, steps, seconds))
    rows = [{"run": name, "generator_steps": steps // 2, "seconds": seconds} | score(samples_of(ckpt, args.num))
            for name, ckpt, steps, seconds in runs]  # fmt: skip
    rows.append({"run": "the 500 training images themselves", "generator_steps": 0, "seconds": 0.0}
                | score(training_images(mnist)))  # fmt: skip
    print(f"\nImages: DCGAN pre-trained {pre_steps // 2} generator steps on digits 0-4 in {pre_s:.0f} s; then "
          f"{args.image_steps} generator steps on 500 images of 5-9. {args.num} samples each (seed 0) against the "
          f"{score.num_reference} test images of 5-9, genlit's MNIST evaluator "
          f"({score.extractor.identity}).")  # fmt: skip
    print(f"{'run':<38} {'G steps':>8} {'wall s':>7} {'FID':>8} {'KID':>8} {'share 5-9':>10}")
    for r in rows:
        print(f"{r['run']:<38} {r['generator_steps']:>8} {r['seconds']:>7.0f} {r['fid']:>8.1f} {r['kid']:>8.4f} "
              f"{r['target_share']:>10.3f}")  # fmt: skip
    return rows


# -------------------------------------------------------------------------------------------------------- text
def lora_available() -> str | None:
    """Why the LoRA run cannot be made here, or None when it can."""
    if not (CONFIGS / "gpt_speaker_lora.yaml").is_file():
        return "no experiments/finetune/gpt_speaker_lora.yaml"
    if importlib.util.find_spec("peft") is None:
        return "Hugging Face peft is not installed"
    return None


def bits_per_char(ckpt: str, source: Path) -> float:
    """The checkpoint's bits per character on the validation split of ``source`` (every non-overlapping block)."""
    return text_record(load_family(ckpt).eval(), str(source), "val")["metrics"]["bits_per_char"]


def text_rows(args, root: Path) -> list[dict]:
    """Pre-train on the others' lines, then fine-tune (full, LoRA) and scratch on one speaker's; a row for each."""
    corpora = write_speaker_corpora(os.path.join(os.environ["GENLIT_DATA_DIR"], "tinyshakespeare", "input.txt"))
    n, m = args.text_pretrain_steps, args.text_steps
    pre, pre_steps, pre_s = fit("gpt_others_pretrain.yaml", root / "gpt_pretrain", n,
                                "--data.source", str(corpora.others_path), *schedule(n, 100))  # fmt: skip
    own = ["--data.source", str(corpora.speaker_path), "--data.tokenizer_from", pre]
    plans = [("fine-tuned (every weight)", "gpt_speaker_finetune.yaml", ["--model.init_from", pre], 20),
             ("fine-tuned (LoRA)", "gpt_speaker_lora.yaml", ["--model.init_from", pre], 20),
             ("from scratch", "gpt_speaker_scratch.yaml", [], 50)]  # fmt: skip
    why_not = lora_available()
    runs = [("pre-trained on the others (no step)", pre, 0, 0.0)]
    for name, config, extra, warmup in plans:
        if "LoRA" in name and why_not:
            continue
        ckpt, steps, seconds = fit(config, root / config.removesuffix(".yaml"), m, *own, *extra, *schedule(m, warmup))
        runs.append((name, ckpt, steps, seconds))
    rows = [{"run": name, "steps": steps, "seconds": seconds,
             "speaker_bpc": bits_per_char(ckpt, corpora.speaker_path),
             "others_bpc": bits_per_char(ckpt, corpora.others_path)}
            for name, ckpt, steps, seconds in runs]  # fmt: skip
    speaker = corpora.speaker
    print(f"\nText: GPT pre-trained {pre_steps} steps on every speech but {speaker}'s in {pre_s:.0f} s; then "
          f"{m} steps on {speaker}'s lines alone. Bits per character on the validation text (last 10%) of each "
          "corpus.")  # fmt: skip
    if why_not:
        print(f"(LoRA not run: {why_not})")
    print(f"{'run':<38} {'steps':>6} {'wall s':>7} {speaker + ' bpc':>16} {'others bpc':>11}")
    for r in rows:
        print(f"{r['run']:<38} {r['steps']:>6} {r['seconds']:>7.0f} {r['speaker_bpc']:>16.3f} {r['others_bpc']:>11.3f}")
    return rows


def main() -> None:
    """Run the image chain and the text chain; print their tables (and write them as JSON with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-pretrain-steps", type=positive_int, default=2500, help="generator steps on 0-4")
    parser.add_argument("--image-steps", type=positive_int, default=800, help="generator steps on 5-9, each run")
    parser.add_argument("--text-pretrain-steps", type=positive_int, default=1500, help="steps on the others' lines")
    parser.add_argument("--text-steps", type=positive_int, default=300, help="steps on the speaker's lines, each run")
    parser.add_argument("--num", type=positive_int, default=1000, help="samples drawn from each image model")
    parser.add_argument("--only", choices=("images", "text"), default=None, help="run one of the two chains")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    start, results = time.perf_counter(), {}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        if args.only in (None, "images"):
            results["images"] = image_rows(args, Path(root))
        if args.only in (None, "text"):
            results["text"] = text_rows(args, Path(root))
    print(f"\nwhole benchmark: {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
