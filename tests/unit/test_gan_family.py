"""The GAN LightningModule: step counting, n_critic, schedulers, EMA, labels and option errors."""

from functools import partial

import lightning as L
import pytest
import torch

from genlit import GAN, ToyDataModule
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator

ADAM = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))


def make_gan(**kwargs) -> GAN:
    args = {"data_shape": (2,), "num_classes": 8, "g_optimizer": ADAM, "d_optimizer": ADAM} | kwargs
    return GAN(partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=16), **args)


def fit(model: GAN, batches: int, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=-1, limit_train_batches=batches, max_epochs=1, logger=False, enable_checkpointing=False,
        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(model, datamodule=ToyDataModule("ring8", batch_size=32, num_train=1024, num_val=64))
    return trainer


@pytest.mark.parametrize("n_critic", [1, 3])
def test_global_step_counts_every_optimizer_step(n_critic):
    model = make_gan(n_critic=n_critic)
    trainer = fit(model, batches=6)
    assert model.generator_steps == 6 // n_critic
    assert trainer.global_step == 6 + 6 // n_critic  # D steps + G steps


def test_frozen_net_is_restored_and_ema_tracks_generator():
    model = make_gan(ema_decay=0.5)
    fit(model, batches=4)
    assert all(p.requires_grad for p in model.generator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())
    assert not any(p.requires_grad for p in model.ema.parameters())
    assert int(model.ema.n_averaged) == 4
    ema_w, g_w = model.ema.module.net[0].weight, model.generator.net[0].weight
    assert not torch.equal(ema_w, g_w) and torch.allclose(ema_w, g_w, atol=0.05)


def test_schedulers_step_with_their_optimizer():
    model = make_gan(g_lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), n_critic=2)
    trainer = fit(model, batches=4)
    d_opt, g_opt = trainer.optimizers
    assert g_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)  # 2 generator steps
    assert d_opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # no D scheduler


def test_sample_shapes_labels_and_determinism():
    model = make_gan(conditional=True)
    a = model.sample(10, generator=torch.Generator().manual_seed(1))
    b = model.sample(10, generator=torch.Generator().manual_seed(1))
    assert a.shape == (10, 2) and torch.equal(a, b)
    model.sample(3, labels=torch.tensor([0, 7, 3]))
    with pytest.raises(ValueError, match=r"labels must be 3 integers in \[0, 8\)"):
        model.sample(3, labels=torch.tensor([0, 8, 3]))


def test_option_errors_name_the_fix():
    with pytest.raises(ValueError, match="conditional=True needs labelled data.*--data.label_column"):
        make_gan(conditional=True, num_classes=0)
    with pytest.raises(ValueError, match="n_critic must be >= 1"):
        make_gan(n_critic=0)
    with pytest.raises(ValueError, match="hinge"):
        make_gan(loss="minimax")
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        make_gan(ema_decay=1.0)


def test_losses_are_logged_per_step_and_per_epoch():
    model = make_gan()
    trainer = fit(model, batches=4, log_every_n_steps=1)
    metrics = trainer.callback_metrics
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/d_loss_epoch"):
        assert key in metrics and torch.isfinite(metrics[key])


def test_one_process_ddp_trains_both_nets(tmp_path):
    """DDP wraps the model even with one process (sbatch with one GPU): the G step must reach D's parameters."""
    model = make_gan(n_critic=1)
    trainer = fit(model, batches=4, strategy="ddp", devices=1, accelerator="cpu", default_root_dir=tmp_path)
    assert trainer.global_step == 8 and model.generator_steps == 4
