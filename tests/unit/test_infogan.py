"""InfoGAN: G's input layout, the information loss in both steps, what is synced, fixed codes and their errors."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import genlit.families.manual_steps as manual_steps
from genlit import GAN, InfoGAN
from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genlit.nets.stylegan import StyleGANDiscriminator
from genlit.objectives.information import LatentCodes
from tests.unit.test_acgan import trainer

SHAPE = (1, 28, 28)
NOISE, K, N = 6, 10, 2  # noise size, categories, continuous codes
TINY_G = partial(DCGANGenerator, latent_dim=NOISE + K + N, width=8)
TINY_D = partial(DCGANDiscriminator, width=8, aux_hidden=16)


def make_infogan(**kwargs) -> InfoGAN:
    return InfoGAN(TINY_G, TINY_D, SHAPE, **({"num_classes": 10} | kwargs))


def generator_inputs(model: InfoGAN, num: int, seed: int = 5, **options) -> torch.Tensor:
    """What G was given (num, latent_dim) when drawing samples 0..num-1 under ``seed`` with ``options``."""
    seen = []
    hook = model.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        model.sample_many(range(num), seed=seed, batch_size=3, **options)
    finally:
        hook.remove()
    return torch.cat(seen)


def test_fixed_codes_set_the_codes_and_nothing_else():
    model = make_infogan()
    free = generator_inputs(model, 6)
    assert model.noise_dim == NOISE and free.shape == (6, NOISE + K + N)
    torch.testing.assert_close(free[:, NOISE : NOISE + K].sum(1), torch.ones(6))  # c1 one-hot
    assert free[:, NOISE + K :].abs().max() <= 1  # continuous codes from U(-1, 1)
    twos, sevens = generator_inputs(model, 6, category=2), generator_inputs(model, 6, category=7)
    assert (twos[:, NOISE : NOISE + K].argmax(1) == 2).all() and (sevens[:, NOISE : NOISE + K].argmax(1) == 7).all()
    others = torch.cat([twos[:, :NOISE], twos[:, NOISE + K :]], 1)
    torch.testing.assert_close(others, torch.cat([sevens[:, :NOISE], sevens[:, NOISE + K :]], 1))  # only c1 differs
    torch.testing.assert_close(others, torch.cat([free[:, :NOISE], free[:, NOISE + K :]], 1))
    half = generator_inputs(model, 6, continuous=[0.5, None])
    assert (half[:, NOISE + K] == 0.5).all()
    torch.testing.assert_close(half[:, NOISE + K + 1], free[:, NOISE + K + 1])  # the unfixed code stays random
    torch.testing.assert_close(half[:, : NOISE + K], free[:, : NOISE + K])
    images = model.sample_many(range(4), seed=5, category=2), model.sample_many(range(4), seed=5, category=7)
    assert (images[0] - images[1]).abs().amax() > 1e-4  # the category reaches the image


def test_sample_i_depends_only_on_seed_and_i_with_fixed_codes():
    model = make_infogan()
    whole = model.sample_many(range(7), seed=2, batch_size=7, category=4, continuous=[None, -1.0])
    pieces = model.sample_many(range(7), seed=2, batch_size=2, category=4, continuous=[None, -1.0])
    torch.testing.assert_close(whole, pieces, atol=1e-4, rtol=0)
    tail = model.sample_many(range(3, 7), seed=2, category=4, continuous=[None, -1.0])
    torch.testing.assert_close(whole[3:], tail, atol=1e-4, rtol=0)


def test_bad_sampling_options_are_one_clear_line():
    model = make_infogan()
    for bad in (10, -1, 2.5):
        with pytest.raises(ValueError, match=r"category must be an integer in \[0, 10\)"):
            model.sample(2, category=bad)
    for bad in ([0.5], [0.1, 0.2, 0.3], [math.nan, None], "ab"):
        with pytest.raises(ValueError, match="continuous must be 2 values, one per continuous code"):
            model.sample(2, continuous=bad)
    with pytest.raises(ValueError, match="unconditional; sample it without labels"):
        model.sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="InfoGAN has no sampling option truncation; its options: category, contin"):
        model.sample(2, truncation=0.5)
    gan = GAN(TINY_G, partial(DCGANDiscriminator, width=8), SHAPE)
    for option in ({"continuous": [0.1, 0.2]}, {"category": 3}):
        with pytest.raises(ValueError, match="GAN has no sampling option .*; its options: truncation"):
            gan.sample(2, **option)


def hand_info(q: torch.Tensor, codes: LatentCodes, continuous_weight: float) -> torch.Tensor:
    log_probs = q[:, :K] - q[:, :K].exp().sum(1, keepdim=True).log()
    ce = -log_probs[torch.arange(len(q)), codes.category].mean()
    nll = (0.5 * (codes.continuous - q[:, K : K + N]) ** 2 + 0.5 * math.log(2 * math.pi)).sum(1).mean()
    return ce + continuous_weight * nll


def test_both_steps_add_the_information_loss_of_g_codes():
    torch.manual_seed(3)
    model = make_infogan(continuous_weight=0.1)
    real, fake = torch.rand(5, *SHAPE) * 2 - 1, torch.rand(5, *SHAPE) * 2 - 1
    codes = LatentCodes(torch.tensor([0, 3, 3, 9, 5]), torch.rand(5, N) * 2 - 1)
    loss, _, stats = model._discriminator_loss(real, fake, None, codes)
    real_adv = model.discriminator(real)
    fake_adv, q = model.discriminator.heads(fake)
    adversarial = F.softplus(-real_adv).mean() + F.softplus(fake_adv).mean()
    torch.testing.assert_close(loss, adversarial + hand_info(q, codes, 0.1))
    assert set(stats) >= {"info_categorical", "info_continuous", "code_accuracy", "mi_categorical"}
    g_loss, g_stats = model._generator_loss(fake, None, codes)
    torch.testing.assert_close(g_loss, F.softplus(-fake_adv).mean() + hand_info(q, codes, 0.1))
    torch.testing.assert_close(g_stats["g_info"], hand_info(q, codes, 0.1))


def test_training_draws_codes_trains_q_with_d_and_g_through_q(monkeypatch):
    synced = []
    monkeypatch.setattr(manual_steps, "synchronize_step", lambda net, finite=True: synced.append(
        (net, {name for name, p in net.named_parameters() if p.grad is not None})) or finite)  # fmt: skip
    drawn, real_fake = [], InfoGAN._fake

    def recording_fake(self, num, labels):
        fake, codes = real_fake(self, num, labels)
        drawn.append(codes)
        return fake, codes

    monkeypatch.setattr(InfoGAN, "_fake", recording_fake)
    model = make_infogan()
    q_before = model.discriminator.aux.net[-1].weight.detach().clone()
    images = torch.rand(16, *SHAPE) * 2 - 1
    fit = trainer(2)
    fit.fit(model, DataLoader(TensorDataset(images, torch.zeros(16, dtype=torch.long)), batch_size=8))
    assert [net for net, _ in synced] == [model.discriminator, model.generator] * 2
    assert {name for name, _ in model.discriminator.named_parameters()} == synced[0][1]  # Q's head and D's body
    assert synced[1][1] == {name for name, _ in model.generator.named_parameters()}
    assert not torch.equal(q_before, model.discriminator.aux.net[-1].weight)
    assert len(drawn) == 4  # codes drawn afresh for each D step and each G step
    categories = torch.cat([codes.category for codes in drawn])
    assert categories.min() >= 0 and categories.max() < K and len(categories.unique()) > 3
    for key in ("info_categorical", "info_continuous", "code_accuracy", "g_info", "g_loss", "d_loss"):
        assert torch.isfinite(fit.callback_metrics[f"train/{key}"]), key


def test_validation_reports_code_accuracy_and_a_checkpoint_rebuilds_learned_std(tmp_path):
    model = make_infogan(learn_std=True)
    assert model.discriminator.aux_outputs == K + 2 * N
    images = TensorDataset(torch.rand(8, *SHAPE) * 2 - 1, torch.zeros(8, dtype=torch.long))
    fit = trainer(0, default_root_dir=tmp_path, limit_val_batches=None)
    metrics = fit.validate(model, DataLoader(images, batch_size=8), verbose=False)[0]
    assert 0.0 <= metrics["val/code_accuracy"] <= 1.0 and "val/info_continuous" in metrics
    fit.save_checkpoint(tmp_path / "infogan.ckpt")
    restored = InfoGAN.load_from_checkpoint(tmp_path / "infogan.ckpt", weights_only=False)
    assert restored.layout == model.layout and restored.noise_dim == NOISE
    torch.testing.assert_close(restored.sample_many(range(3), seed=1, category=1),
                               model.sample_many(range(3), seed=1, category=1))  # fmt: skip


def test_bad_model_options_are_one_clear_line():
    with pytest.raises(ValueError, match="InfoGAN is unconditional .*: leave conditional false"):
        make_infogan(conditional=True)
    with pytest.raises(ValueError, match="latent_dim 12 leaves no noise beside InfoGAN's 12 code inputs.*74"):
        InfoGAN(partial(DCGANGenerator, latent_dim=12, width=8), TINY_D, SHAPE)
    with pytest.raises(ValueError, match="num_categories >= 2 and num_continuous >= 0"):
        make_infogan(num_categories=1)
    with pytest.raises(ValueError, match="categorical_weight and continuous_weight must be >= 0"):
        make_infogan(continuous_weight=-0.1)
    stylegan_d = partial(StyleGANDiscriminator, channels=4, max_channels=8)
    with pytest.raises(ValueError, match="InfoGAN needs a discriminator with an auxiliary head.*StyleGANDiscrimin"):
        InfoGAN(TINY_G, stylegan_d, SHAPE)
