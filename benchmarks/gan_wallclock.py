"""``dcgan_mnist`` as configured against a plain PyTorch loop with the same nets, for the same wall time, in one run.

    python -m benchmarks.gan_wallclock [--minutes 10] [--num 1000] [--repeats 1] [--plain-lr 2e-4]
    python -m benchmarks.gan_wallclock --breakdown [--batches 400]

The comparison (what a user on a laptop runs): ``genlit fit --config experiments/gan/dcgan_mnist.yaml`` with
``--trainer.max_time`` set to the budget (everything else as the YAML says: validation, the FID monitor,
sample grids, checkpoints, offline W&B), then a hand-written loop (the DCGAN nets and the DCGAN paper's Adam,
lr 2e-4, betas (0.5, 0.999), as a user writes it; non-saturating loss, no EMA, no logging; ``--plain-lr`` sets its
learning rate) for the same wall time from its start. Printed: generator
steps of each and the FID of ``--num`` samples (genlit: the EMA generator, as ``genlit sample`` draws; the
plain loop: its generator in eval mode) with genlit's MNIST evaluator against the 1,000 test images.

``--breakdown`` measures where genlit's time goes: ``--batches`` training batches of the experiment as
configured, then with one cost removed at a time (validation, the FID monitor, sample grids and the GAN
monitor, per-epoch checkpoints, W&B); batches/s of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from benchmarks.args import positive_int
from benchmarks.quality import REPO, train
from genlit.commands.evaluate import evaluate, reference_cache, reference_features
from genlit.data.images import ImageDataModule
from genlit.imaging import to_uint8
from genlit.metrics.extractors import make_extractor
from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator

SHAPE = (1, 28, 28)


def plain_loop(
    images: torch.Tensor, seconds: float, batch_size: int = 64, lr: float = 2e-4
) -> tuple[DCGANGenerator, int]:
    """The hand-written DCGAN loop, trained until ``seconds`` have passed; returns G and its steps."""
    deadline = time.perf_counter() + seconds
    G, D = DCGANGenerator(SHAPE, 0, latent_dim=100, width=64), DCGANDiscriminator(SHAPE, 0, width=64, norm="batch")
    g_opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    steps = 0
    while time.perf_counter() < deadline:
        for index in torch.randperm(len(images)).split(batch_size):
            if len(index) < batch_size or time.perf_counter() >= deadline:
                break
            real = images[index].float().div(127.5).sub(1)  # (B, 1, 28, 28)
            fake = G(torch.randn(batch_size, G.latent_dim))  # (B, 1, 28, 28)
            d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            g_loss = F.softplus(-D(fake)).mean()
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            steps += 1
    return G, steps


def fid_of(samples: torch.Tensor, extractor, reference) -> float:
    """FID of float samples (N, 1, 28, 28) in [-1, 1] against the reference features."""
    images = to_uint8(samples).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return evaluate(images, None, extractor, reference, kid_subset_size=min(1000, len(images)))["fid"]


def compare(args, mnist: str) -> None:
    """genlit's experiment and the plain loop for the same minutes; steps and FID of each."""
    from benchmarks.quality import score

    extractor = make_extractor("evaluator:mnist_classifier", dataset=mnist)
    data = ImageDataModule(mnist)
    reference = reference_features(extractor, data, "test", reference_cache())[:2]
    data.setup("fit")
    images = data.train_dataloader().dataset.tensors[0]  # (N, 1, 28, 28) uint8
    budget = f"00:00:{args.minutes:02d}:00"
    for r in range(args.repeats):
        start = time.perf_counter()
        ckpt, _ = train("gan/dcgan_mnist", budget, mnist)
        wall = time.perf_counter() - start
        g_steps = int(torch.load(ckpt, weights_only=False, map_location="cpu")["state_dict"]["_generator_steps"])
        genlit_fid = score(ckpt, args.num, extractor, reference, data)["fid"]
        torch.manual_seed(r)
        G, plain_steps = plain_loop(images, args.minutes * 60, lr=args.plain_lr)
        with torch.no_grad():
            plain_fid = fid_of(G.eval()(torch.randn(args.num, G.latent_dim)), extractor, reference)
        print(f"repeat {r}: genlit {g_steps} generator steps ({wall:.0f} s wall incl. start-up), "
              f"FID {genlit_fid:.1f}; plain loop (lr {args.plain_lr:g}) {plain_steps} steps in {args.minutes * 60} s, "
              f"FID {plain_fid:.1f}; "
              f"genlit/plain: steps {g_steps / plain_steps:.3f}, FID {genlit_fid / plain_fid:.3f}",
              flush=True)  # fmt: skip


def breakdown(args, mnist: str) -> None:
    """Batches/s of the experiment as configured and with one cost removed at a time."""
    from genlit.cli import GenlitCLI

    config = str(REPO / "experiments" / "gan" / "dcgan_mnist.yaml")
    variants = {
        "as configured": [],
        "no validation": ["--trainer.limit_val_batches", "0"],
        "no callbacks but last.ckpt": ["--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
                                       "init_args: {save_last: true}}]"],
        "no W&B": ["--trainer.logger", "false"],
        "no callbacks, no W&B, no validation": [
            "--trainer.callbacks=[]", "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
            "--trainer.enable_checkpointing", "false"],
    }  # fmt: skip
    for name, extra in variants.items():
        with tempfile.TemporaryDirectory() as root:
            args_ = ["fit", "--config", config, "--data.dataset", mnist, "--trainer.default_root_dir", root,
                     "--trainer.max_steps", str(2 * args.batches), "--trainer.enable_progress_bar", "false",
                     *extra]  # fmt: skip
            start = time.perf_counter()
            GenlitCLI(args_)
            wall = time.perf_counter() - start
        print(f"{name}: {args.batches} batches in {wall:.1f} s, {args.batches / wall:.2f} batches/s", flush=True)


def main() -> None:
    """Parse the options; run the comparison or the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=positive_int, default=10)
    parser.add_argument("--plain-lr", type=float, default=2e-4, help="the plain loop's Adam learning rate")
    parser.add_argument("--num", type=positive_int, default=1000)
    parser.add_argument("--repeats", type=positive_int, default=1)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--batches", type=positive_int, default=400)
    args = parser.parse_args()
    mnist = os.path.join(os.environ["GENLIT_DATA_DIR"], "mnist")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    (breakdown if args.breakdown else compare)(args, mnist)


if __name__ == "__main__":
    main()
