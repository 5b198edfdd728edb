"""The StyleGAN-style options of the GAN family: truncation, lazy R1, path length, augmentation, train_limit."""

import math
from functools import partial

import pytest
import torch

import genlit.families.gan as gan_module
from genlit.families.gan import GAN
from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.stylegan import StyleGANDiscriminator, StyleGANGenerator
from genlit.objectives.adversarial import path_length_penalty
from genlit.objectives.discriminator_augment import AdaptiveAugment, DiffAugment

SHAPE = (1, 28, 28)
TINY_G = partial(StyleGANGenerator, latent_dim=16, w_dim=16, mapping_layers=2, channels=4, max_channels=8)
TINY_D = partial(StyleGANDiscriminator, channels=4, max_channels=8)


def style_gan(**kwargs) -> GAN:
    return GAN(TINY_G, TINY_D, SHAPE, **kwargs)


def test_truncation_zero_gives_the_average_image_and_one_keeps_variety():
    model = style_gan()
    model.generator.w_avg.normal_()  # a trained-looking centre
    model.ema.module.w_avg.copy_(model.generator.w_avg)
    average = model.sample(6, truncation=0.0, generator=torch.Generator().manual_seed(0))  # (6, 1, 28, 28)
    torch.testing.assert_close(average, average[:1].expand_as(average))
    varied = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert (varied - varied[:1]).abs().amax() > 1e-3
    ws = model.ema.module.w_avg[None, None, :].expand(1, model.generator.num_ws, -1)  # (1, num_ws, w_dim)
    with torch.no_grad(), model.ema_weights(), model.eval_mode():
        torch.testing.assert_close(average[:1], model.generator.synthesis(ws), rtol=1e-5, atol=1e-5)


def test_truncation_needs_a_style_generator_and_a_sensible_value():
    dcgan = GAN(partial(DCGANGenerator, width=8), partial(DCGANDiscriminator, width=8), SHAPE)
    with pytest.raises(ValueError, match="truncation needs a generator with a mapping network"):
        dcgan.check_sample_options(truncation=0.7)
    with pytest.raises(ValueError, match="truncation must be >= 0"):
        style_gan().check_sample_options(truncation=-0.5)
    with pytest.raises(ValueError, match="pl_weight needs a generator with a mapping network"):
        GAN(partial(DCGANGenerator, width=8), partial(DCGANDiscriminator, width=8), SHAPE, pl_weight=2.0)
    with pytest.raises(ValueError, match="r1_every and pl_every must be >= 1"):
        style_gan(r1_every=0)


def test_path_length_penalty_of_a_linear_synthesis_matches_a_hand_computation():
    batch, num_ws, w_dim, c, h = 5, 3, 4, 1, 6
    a = torch.randn(w_dim, c * h * h, dtype=torch.float64)
    synthesis = lambda ws: (ws.sum(dim=1) @ a).view(-1, c, h, h)  # noqa: E731 - g(ws) linear in each ws_i
    ws = torch.randn(batch, num_ws, w_dim, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    penalty, lengths = path_length_penalty(synthesis, ws, torch.tensor(0.5))
    torch.manual_seed(3)
    y = torch.randn(batch, c, h, h, dtype=torch.float64) / math.sqrt(h * h)
    expected = (y.flatten(1) @ a.T).norm(dim=1).float()  # d(g . y)/d ws_i = A y for every i: length ||A y||
    torch.testing.assert_close(lengths, expected)
    torch.testing.assert_close(penalty, (expected - 0.5).square().mean())


def fit_steps(model: GAN, batches: int, data: torch.Tensor) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(data, torch.zeros(len(data), dtype=torch.long)), batch_size=8)
    trainer = L.Trainer(max_steps=2 * batches, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")  # fmt: skip
    trainer.fit(model, loader)


def test_lazy_r1_runs_every_r1_every_discriminator_steps(monkeypatch):
    calls = []
    real_r1 = gan_module.r1_penalty
    monkeypatch.setattr(gan_module, "r1_penalty", lambda *a: calls.append(1) or real_r1(*a))
    model = GAN(partial(MLPGenerator, latent_dim=4, hidden=8), partial(MLPDiscriminator, hidden=8), (2,),
                r1_gamma=1.0, r1_every=4)  # fmt: skip
    fit_steps(model, 8, torch.randn(64, 2))
    assert len(calls) == 2 and int(model._discriminator_steps) == 8  # D steps 0 and 4


def test_path_length_regularization_trains_a_style_generator():
    model = style_gan(pl_weight=2.0, pl_every=2)
    fit_steps(model, 4, torch.rand(32, *SHAPE) * 2 - 1)
    assert int(model.generator_steps) == 4 and float(model._pl_mean) > 0  # 2 regularized steps moved the mean


@pytest.mark.parametrize("augment", [AdaptiveAugment(speed_images=64, interval=1), DiffAugment()], ids=["ada", "diff"])
def test_augmented_discriminator_trains_and_ada_state_survives_a_checkpoint(augment):
    model = style_gan(augment=augment)
    seen = []
    original = model.discriminator.forward
    model.discriminator.forward = lambda x, y=None: seen.append(x) or original(x, y)
    fit_steps(model, 3, torch.rand(32, *SHAPE) * 2 - 1)
    assert len(seen) == 9  # D sees real and fake in each D step, fake in each G step
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    if isinstance(augment, AdaptiveAugment):
        augment.controller._p = 0.25
        restored = style_gan(augment=AdaptiveAugment(speed_images=64, interval=1))
        restored.on_load_checkpoint({**checkpoint, "state_dict": {}})
        assert restored.augment.probability == checkpoint["discriminator_augment"]["p"]
        assert checkpoint["discriminator_augment"]["p"] != 0.25


def test_ada_raises_p_while_d_is_confident_on_reals():
    augment = AdaptiveAugment(speed_images=64, interval=1)
    for _ in range(3):
        augment.observe(torch.full((8,), 5.0))  # D calls every real image real: overfitting
    assert augment.probability == pytest.approx(3 * 8 / 64)
    for _ in range(2):
        augment.observe(torch.full((8,), -5.0))
    assert augment.probability == pytest.approx(8 / 64)


def test_train_limit_keeps_the_first_images(mnist_dir):
    from genlit.data.images import ImageDataModule

    data = ImageDataModule(str(mnist_dir), train_limit=1000)
    data.setup("fit")
    assert len(data.train_dataloader().dataset) == 1000 and len(data.val_dataloader().dataset) > 0
    with pytest.raises(ValueError, match="train_limit 0 must be >= 1"):
        ImageDataModule(str(mnist_dir), train_limit=0)
