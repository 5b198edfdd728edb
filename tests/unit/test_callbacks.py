"""Tests for SampleGrid and GANMonitor on tiny real Lightning runs (CPU, a few steps) with a dummy GAN."""

from __future__ import annotations

import csv
import math
import re
import warnings
from functools import partial
from types import SimpleNamespace
from unittest.mock import MagicMock

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlit.callbacks.gan_monitor import GANMonitor, mean_pairwise_distance
from genlit.callbacks.loggers import log_picture
from genlit.callbacks.sample_grid import SampleGrid, StepCrossing
from genlit.families.base import GenerativeFamily


class DummyGAN(GenerativeFamily):
    """A linear GAN on the family contract: generator, discriminator, draw(), two manual optimizers."""

    def __init__(self, data_shape=(2,), num_classes: int = 0, collapsed: bool = False) -> None:
        super().__init__(num_classes, conditional=num_classes > 0)
        self.automatic_optimization = False
        self.data_shape = data_shape
        self.dim = math.prod(data_shape)
        self.generator = nn.Linear(self.dim, self.dim)
        nn.init.eye_(self.generator.weight)  # G(z) = z + b: as diverse as N(0, I)
        nn.init.zeros_(self.generator.bias)
        self.discriminator = nn.Linear(self.dim, 1)
        self.collapsed = collapsed
        self.sample_calls: list[dict] = []
        self.expected_norms: dict[str, float] = {}

    def draw(self, num, labels, rng):
        z = rng.randn(self.dim)  # (num, D)
        if self.collapsed:
            z = torch.zeros_like(z)
        call = {"z0": z[0].clone(), "labels": labels, "grad": torch.is_grad_enabled(), "training": self.training}
        self.sample_calls.append(call)
        out = self.generator(z)  # (num, D)
        return torch.tanh(out).view(num, *self.data_shape) if len(self.data_shape) == 3 else out

    def _norm(self, net: nn.Module) -> float:
        return torch.cat([p.grad.flatten() for p in net.parameters()]).norm().item()

    def training_step(self, batch, batch_idx):
        x = batch[0].flatten(1)  # (B, D)
        d_opt, g_opt = self.optimizers()
        real, fake = self.discriminator(x), self.discriminator(self.generator(torch.randn_like(x)).detach())
        d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        self.expected_norms["d"] = self._norm(self.discriminator)
        d_opt.step()
        g_loss = F.softplus(-self.discriminator(self.generator(torch.randn_like(x)))).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        self.expected_norms["g"] = self._norm(self.generator)
        g_opt.step()
        metrics = {"train/d_loss": d_loss, "train/g_loss": g_loss}
        metrics |= {"train/d_real": real.sigmoid().mean(), "train/d_fake": fake.sigmoid().mean()}
        self.log_dict(metrics, on_step=True, on_epoch=True)

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.discriminator.parameters(), lr=0.01),
            torch.optim.SGD(self.generator.parameters(), lr=0.01),
        ]


class ToyData(pl.LightningDataModule):
    """2-D points around two centres, exposing ``centers`` like genlit's toy data."""

    def __init__(self, num: int = 16, batch_size: int = 4) -> None:
        super().__init__()
        self.centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
        self.num, self.batch_size = num, batch_size

    def train_dataloader(self):
        x = torch.randn(self.num, 2, generator=torch.Generator().manual_seed(0))  # (N, 2)
        return DataLoader(TensorDataset(x, torch.full((self.num,), -1)), batch_size=self.batch_size)


def loader(shape=(2,), num: int = 16, batch_size: int = 4) -> DataLoader:
    x = torch.randn(num, *shape, generator=torch.Generator().manual_seed(0))  # (N, *shape)
    return DataLoader(TensorDataset(x, torch.zeros(num, dtype=torch.long)), batch_size=batch_size)


def make_trainer(tmp_path, callbacks, max_steps, logger=None, log_every_n_steps=1) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=100,
        logger=logger if logger is not None else CSVLogger(tmp_path),
        callbacks=callbacks,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def read_metrics(trainer: pl.Trainer) -> list[dict[str, str]]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def test_step_crossing_survives_steps_of_two():
    trigger = StepCrossing(3)
    trigger.reset(0)
    assert [s for s in (2, 4, 6, 8) if trigger.crossed(s)] == [4, 6]
    assert trigger.final(8) and not trigger.final(8)
    trigger.reset(6)  # resuming at step 6: the next multiple is 9
    assert not trigger.crossed(8) and trigger.crossed(10)
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        StepCrossing(0)


def test_sample_grid_saves_pngs_at_crossed_steps(tmp_path):
    module = DummyGAN(data_shape=(1, 8, 8))
    grid = SampleGrid(num_samples=6, every_n_steps=3, seed=1)
    trainer = make_trainer(tmp_path, [grid], max_steps=8)  # 4 batches, global_step 2, 4, 6, 8
    trainer.fit(module, loader((1, 8, 8)))
    folder = tmp_path / "lightning_logs" / "version_0" / "samples"
    assert sorted(p.name for p in folder.iterdir()) == [f"step_{s:07d}.png" for s in (4, 6, 8)]
    with Image.open(folder / "step_0000008.png") as img:
        assert img.mode == "L" and img.size == (3 * 10 + 2, 2 * 10 + 2)  # 6 images: 3 per row, 2 rows
    assert len(module.sample_calls) == 3
    assert all(torch.equal(c["z0"], module.sample_calls[0]["z0"]) for c in module.sample_calls)  # fixed z
    assert all(c["labels"] is None and not c["grad"] and not c["training"] for c in module.sample_calls)
    assert module.training  # back in train mode after each picture


def test_sample_grid_conditional_labels_cycle_classes(tmp_path):
    module = DummyGAN(data_shape=(1, 4, 4), num_classes=3)
    trainer = make_trainer(tmp_path, [SampleGrid(num_samples=6, every_n_steps=100)], max_steps=2)
    trainer.fit(module, loader((1, 4, 4)))
    (call,) = module.sample_calls  # only the end-of-training grid
    assert call["labels"].tolist() == [0, 1, 2, 0, 1, 2]
    with Image.open(tmp_path / "lightning_logs" / "version_0" / "samples" / "step_0000002.png") as img:
        assert img.size == (3 * 6 + 2, 2 * 6 + 2)  # num_classes = 3 images per row


def test_sample_grid_tensorboard_gets_scatter_with_centres(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(
        tmp_path,
        [SampleGrid(num_samples=32, every_n_steps=4)],
        max_steps=4,
        logger=TensorBoardLogger(tmp_path),
    )
    trainer.fit(DummyGAN(), datamodule=ToyData())
    png = tmp_path / "lightning_logs" / "version_0" / "samples" / "step_0000004.png"
    picture = np.asarray(Image.open(png))
    assert picture.shape == (512, 512, 3)
    assert ((picture == (214, 39, 40)).all(axis=-1)).sum() > 0  # the data module's centres are drawn
    events = EventAccumulator(str(png.parent.parent)).Reload()
    (image,) = events.Images("samples")
    assert (image.width, image.height) == (512, 512)
    # global_step 4 is reached in batch 1; the image goes on the scalars' x-axis (batches), like that batch
    assert image.step == events.Scalars("train/g_loss_step")[-1].step == 1


def test_log_picture_dispatches_to_wandb_and_skips_csv():
    wandb, csv_logger = MagicMock(spec=WandbLogger), MagicMock(spec=CSVLogger)
    picture = np.zeros((4, 4, 3), np.uint8)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[wandb, csv_logger], global_step=7)
    log_picture(trainer, "samples", picture)
    wandb.log_image.assert_called_once_with(key="samples", images=[picture], step=7)
    assert csv_logger.method_calls == []
    log_picture(SimpleNamespace(is_global_zero=False, loggers=[wandb], global_step=9), "samples", picture)
    assert wandb.log_image.call_count == 1  # other ranks log nothing


def test_sample_grid_rejects_undrawable_module(tmp_path):
    module = DummyGAN(data_shape=(2,))
    module.data_shape = (5,)
    with pytest.raises(ValueError, match=r"data_shape \(C, H, W\) or \(2,\)"):
        make_trainer(tmp_path, [SampleGrid()], max_steps=2).fit(module, loader((5,)))


def test_mean_pairwise_distance_hand_computed():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])  # pair distances 5, 4, 3
    assert mean_pairwise_distance(x).item() == pytest.approx(4.0)


def test_gan_monitor_grad_norms_on_logging_batches(tmp_path):
    module = DummyGAN()
    monitor = GANMonitor(check_every_n_steps=100, num_samples=8)
    trainer = make_trainer(tmp_path, [monitor], max_steps=8, log_every_n_steps=2)  # batches 0..3
    trainer.fit(module, loader())
    rows = read_metrics(trainer)
    steps = {key: [int(r["step"]) for r in rows if r.get(key)] for key in ("train/g_grad_norm", "train/d_grad_norm")}
    assert steps == {"train/g_grad_norm": [1, 3], "train/d_grad_norm": [1, 3]}  # every 2nd batch only
    metrics = trainer.callback_metrics  # last batch (3) logged: compare with the norms taken in the step
    assert metrics["train/g_grad_norm"].item() == pytest.approx(module.expected_norms["g"], rel=1e-5)
    assert metrics["train/d_grad_norm"].item() == pytest.approx(module.expected_norms["d"], rel=1e-5)


def test_gan_monitor_prints_one_row_per_epoch(tmp_path, capsys):
    monitor = GANMonitor(check_every_n_steps=100, num_samples=8)
    trainer = make_trainer(tmp_path, [monitor], max_steps=14)  # 3 batches per epoch: 2 epochs + 1 batch
    trainer.fit(DummyGAN(), loader(num=12))
    out = capsys.readouterr().out
    assert "GAN training per epoch" in out and "D(G(z))" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\*?\s", line)]
    assert [r[0] for r in rows] == ["0", "1", "2*"]
    assert all(len(r) == 5 for r in rows)
    last = trainer.callback_metrics
    assert float(rows[-1][1]) == pytest.approx(last["train/g_loss_epoch"].item(), abs=1e-4)
    assert float(rows[-1][4]) == pytest.approx(last["train/d_fake_epoch"].item(), abs=1e-4)


def test_gan_monitor_warns_on_collapse(tmp_path):
    monitor = GANMonitor(check_every_n_steps=4, num_samples=16)
    trainer = make_trainer(tmp_path, [monitor], max_steps=8)
    with pytest.warns(UserWarning) as record:
        trainer.fit(DummyGAN(collapsed=True), loader())
    messages = [str(w.message) for w in record if "mode collapse" in str(w.message)]
    assert len(messages) == 2 and re.match(r"possible mode collapse at step 4: .*0\.0% of the data's", messages[0])
    assert messages[1].startswith("possible mode collapse at step 8:")
    assert [step for step, _ in monitor.diversity] == [4, 8]
    assert all(ratio < 0.01 for _, ratio in monitor.diversity)
    logged = [float(r["train/sample_diversity"]) for r in read_metrics(trainer) if r.get("train/sample_diversity")]
    assert logged == pytest.approx([ratio for _, ratio in monitor.diversity])


def test_gan_monitor_quiet_for_diverse_generator(tmp_path):
    monitor = GANMonitor(check_every_n_steps=4, num_samples=64)
    trainer = make_trainer(tmp_path, [monitor], max_steps=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(DummyGAN(), loader())
    assert not [w for w in caught if "mode collapse" in str(w.message)]
    assert all(0.5 < ratio < 2.0 for _, ratio in monitor.diversity)  # N(0, I) samples vs N(0, I) data


def test_gan_monitor_table_survives_resume(tmp_path, capsys):
    first = make_trainer(tmp_path, [GANMonitor(check_every_n_steps=100, num_samples=8)], max_steps=6)
    first.fit(DummyGAN(), loader(num=12))  # exactly epoch 0 (3 batches, 6 steps)
    ckpt = tmp_path / "end.ckpt"
    first.save_checkpoint(ckpt)
    capsys.readouterr()
    monitor = GANMonitor(check_every_n_steps=100, num_samples=8)
    make_trainer(tmp_path, [monitor], max_steps=12).fit(DummyGAN(), loader(num=12), ckpt_path=ckpt)
    # epoch 0 comes from the checkpoint; how Lightning resumes from an end-of-fit checkpoint decides the rest
    assert (monitor.rows[0]["epoch"], monitor.rows[0]["partial"]) == (0, False) and len(monitor.rows) > 1
    assert [row["epoch"] for row in monitor.rows] == list(range(len(monitor.rows)))
    assert re.search(r"^\s+0\s.*\n\s+1\*?\s", capsys.readouterr().out, re.MULTILINE)


def test_sample_quality_ranks_draw_disjoint_samples_that_one_process_would_draw():
    """Two ranks of SampleQualityMonitor draw samples 0..N-1 between them, each once, as one process does
    (a rank-offset seed made rank 0's batch at 1000 repeat rank 1's batch at 0 once a rank drew > 1,000)."""
    from genlit.callbacks.sample_quality import SampleQualityMonitor
    from genlit.families.gan import GAN
    from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    model = GAN(partial(DCGANGenerator, latent_dim=8, width=4), partial(DCGANDiscriminator, width=4), (1, 28, 28))
    monitor = SampleQualityMonitor("unused", num_samples=2400, batch_size=250)

    def samples(rank: int, world_size: int) -> torch.Tensor:
        return monitor._samples(SimpleNamespace(global_rank=rank, world_size=world_size), model).flatten(1)

    single = samples(0, 1)  # (2400, 784) uint8
    ranks = torch.cat([samples(0, 2), samples(1, 2)])
    assert (ranks.int() - single.int()).abs().max() <= 1  # the same samples (up to a rounding at a level's edge)
    assert len(torch.unique(ranks, dim=0)) == 2400  # no sample drawn twice
