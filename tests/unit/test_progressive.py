"""Progressive growing of the StyleGAN-style nets (genlit.nets.progressive): the schedule at its boundaries, the
fade-in of G and D against hand computations, what runs at each level, parameter shapes, the EMA copy, state
dicts, bad options, and the nets without growth unchanged (tiny widths: seconds on one CPU thread)."""

from __future__ import annotations

import re
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from genlit.families.gan import GAN, GrowingNet
from genlit.nets.progressive import ProgressiveGrowth
from genlit.nets.style_layers import lrelu
from genlit.nets.stylegan import StyleGANDiscriminator, StyleGANGenerator

TINY_G = {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "channels": 4, "max_channels": 8}
TINY_D = {"channels": 4, "max_channels": 8}
FADE, STABLE = 10, 10  # 28 px: 7 for images [0, 10), fade to 14 [10, 20), 14 [20, 30), fade to 28 [30, 40), 28
COUNTS = {"7": 5, "14 at 0": 10, "14 at 0.5": 15, "14": 25, "28 at 0": 30, "28 at 0.5": 35, "28": 40}


def growth(**kwargs) -> ProgressiveGrowth:
    return ProgressiveGrowth(**{"fade_images": FADE, "stable_images": STABLE, **kwargs})


def nets(shape=(1, 28, 28), **kwargs) -> tuple[StyleGANGenerator, StyleGANDiscriminator]:
    """A growing G (noise strengths non-zero, eval mode: constant noise) and D with the same schedule."""
    torch.manual_seed(0)
    g = StyleGANGenerator(shape, **TINY_G, growth=growth(**kwargs)).eval()
    d = StyleGANDiscriminator(shape, **TINY_D, growth=growth(**kwargs))
    with torch.no_grad():
        for layer in g.layers:
            layer.noise.strength.fill_(0.5)
    return g, d


def at(images: int, *nets_) -> None:
    """Set the image count of growing nets."""
    for net in nets_:
        net.growth_clock.images.fill_(images)


@pytest.mark.parametrize(
    ("images", "expected"),
    [(0, (0, 1.0)), (9, (0, 1.0)), (10, (1, 0.0)), (15, (1, 0.5)), (19, (1, 0.9)), (20, (1, 1.0)), (29, (1, 1.0)),
     (30, (2, 0.0)), (36, (2, 0.6)), (40, (2, 1.0)), (10**9, (2, 1.0))],
)  # fmt: skip
def test_schedule_maps_image_counts_to_level_and_alpha(images, expected):
    assert growth().level(images, start=0, top=2) == expected


def test_schedule_edge_cases():
    assert ProgressiveGrowth(fade_images=0, stable_images=10).level(10, 0, 2) == (1, 1.0)  # no fade: a jump
    assert ProgressiveGrowth(fade_images=10, stable_images=0).level(0, 0, 2) == (1, 0.0)  # fading from the start
    assert ProgressiveGrowth(fade_images=10, stable_images=0).level(15, 0, 2) == (2, 0.5)
    assert ProgressiveGrowth(fade_images=0, stable_images=0).level(0, 0, 2) == (2, 1.0)  # full size at once
    assert growth().level(10, start=1, top=3) == (2, 0.0)  # counted from the start level
    assert growth().level(0, start=2, top=2) == (2, 1.0) and growth().level(15, start=2, top=2) == (2, 1.0)


def test_nets_report_their_state_and_start_where_asked():
    g, d = nets()
    assert g.growth_clock.images.dtype == torch.long and int(g.growth_clock.images) == 0
    for name, images in COUNTS.items():
        at(images, g, d)
        res, alpha = (int(name.split()[0]), float(name.split()[-1]) if " at " in name else 1.0)
        assert g.growth_state() == d.growth_state() == (res, alpha), name
    g, d = nets((3, 32, 32), start_resolution=8)
    assert g.growth_state() == d.growth_state() == (8, 1.0)
    at(10, g, d)
    assert g.growth_state() == (16, 0.0)
    assert StyleGANGenerator((1, 28, 28), **TINY_G).growth_state() == (28, 1.0)  # not growing: full size


def test_advance_growth_counts_images_and_growing_nets_are_growing_nets():
    g, d = nets()
    assert isinstance(g, GrowingNet) and isinstance(d, GrowingNet)
    for net in (g, d):
        net.advance_growth(8)
        net.advance_growth(8)
        assert int(net.growth_clock.images) == 16 and net.growth_state() == (14, 0.6)
    plain = StyleGANGenerator((1, 28, 28), **TINY_G)
    plain.advance_growth(8)  # without growth: nothing to count
    assert plain.growth_state() == (28, 1.0) and plain.growth_clock is None


def test_generator_fades_in_with_weight_alpha():
    g, _ = nets()
    z = torch.randn(3, 8)
    with torch.no_grad():
        out = {}
        for name, images in COUNTS.items():
            at(images, g)
            out[name] = g(z)  # (3, 1, 28, 28) always
    for name, block in (("7", 4), ("14", 2)):  # a lower level's image is upsampled, nearest, to 28 px
        low = out[name][..., ::block, ::block]  # (3, 1, 28 / block, 28 / block)
        torch.testing.assert_close(out[name], low.repeat_interleave(block, -1).repeat_interleave(block, -2))
    assert (out["14"] - out["7"]).abs().amax() > 1e-3 and (out["28"] - out["14"]).abs().amax() > 1e-3
    for new, old in (("14", "7"), ("28", "14")):
        torch.testing.assert_close(out[f"{new} at 0"], out[old], rtol=0, atol=1e-6)  # continuous
        torch.testing.assert_close(out[f"{new} at 0.5"], 0.5 * out[new] + 0.5 * out[old], rtol=1e-5, atol=1e-6)


def test_discriminator_fades_in_with_weight_alpha():
    _, d = nets()
    x = torch.randn(6, 1, 28, 28)

    def tail(h):  # D after its fade-in point at 28 px (blocks[0]: 28 -> 14), by hand
        h = d.blocks[1](h)  # (B, 8, 7, 7)
        h = lrelu(d.conv(d.mbstd(h)))
        return d.head(lrelu(d.fc(h.flatten(1))))  # (B,)

    with torch.no_grad():
        new = d.blocks[0](lrelu(d.from_rgb(x)))  # the 28 px path, (B, 8, 14, 14)
        old = lrelu(d.lower_from_rgbs[1](F.avg_pool2d(x, 2)))  # FromRGB of the 14 px image, (B, 8, 14, 14)
        for images, alpha in ((30, 0.0), (35, 0.5), (38, 0.8), (40, 1.0)):
            at(images, d)
            torch.testing.assert_close(d(x), tail(alpha * new + (1 - alpha) * old), rtol=1e-5, atol=1e-6)
        at(25, d)  # 14 px, faded in: the same as "28 px at alpha 0"
        at_14 = d(x)
        at(30, d)
        torch.testing.assert_close(d(x), at_14, rtol=1e-5, atol=1e-6)
        at(15, d)  # fading in 14 px: the blend sits after blocks[1] (14 -> 7)
        x14 = F.avg_pool2d(x, 2)  # (B, 1, 14, 14)
        new14 = d.blocks[1](lrelu(d.lower_from_rgbs[1](x14)))  # (B, 8, 7, 7)
        old7 = lrelu(d.lower_from_rgbs[0](F.avg_pool2d(x14, 2)))  # (B, 8, 7, 7)
        h = 0.5 * new14 + 0.5 * old7
        expected = d.head(lrelu(d.fc(lrelu(d.conv(d.mbstd(h))).flatten(1))))
        torch.testing.assert_close(d(x), expected, rtol=1e-5, atol=1e-6)


def test_discriminator_sees_only_the_current_resolution():
    _, d = nets()
    x = torch.randn(4, 1, 28, 28)
    blocky = F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="nearest")  # same 7 px content as x
    with torch.no_grad():
        at(5, d)
        torch.testing.assert_close(d(x), d(blocky), rtol=1e-5, atol=1e-6)
        at(40, d)
        assert (d(x) - d(blocky)).abs().amax() > 1e-4


def test_layers_above_the_current_resolution_are_not_run_nor_trained():
    g, d = nets()
    at(5, g, d)  # 7 px
    called = set()
    for name, module in [*g.named_modules(), *d.named_modules()]:  # G's and D's names do not overlap
        if re.fullmatch(r"(layers|to_rgbs|blocks|lower_from_rgbs)\.\d+|from_rgb", name):
            module.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    g.train()
    F.softplus(-d(g(torch.randn(4, 8)))).mean().backward()
    assert called == {"layers.0", "to_rgbs.0", "lower_from_rgbs.0"}, called
    assert g.layers[1].conv.weight.grad is None and d.blocks[0].conv0.weight.grad is None
    assert g.layers[0].conv.weight.grad is not None and d.lower_from_rgbs[0].weight.grad is not None


def test_growing_never_changes_parameters_or_optimizer_states():
    g, d = nets()
    g.train()
    shapes = {name: p.shape for name, p in [*g.named_parameters(), *d.named_parameters()]}
    opts = [torch.optim.Adam(g.parameters(), lr=1e-3), torch.optim.Adam(d.parameters(), lr=1e-3)]
    for _ in range(9):  # 7 px, fade to 14, 14, fade to 28: four images a batch
        g.advance_growth(4)
        d.advance_growth(4)
        for opt in opts:
            opt.zero_grad()
        F.softplus(-d(g(torch.randn(4, 8)))).mean().backward()
        for opt in opts:
            opt.step()
        assert {name: p.shape for name, p in [*g.named_parameters(), *d.named_parameters()]} == shapes
    assert g.growth_state() == (28, 0.6)
    for opt in opts:  # Adam's moments match the parameters they belong to
        for group in opt.param_groups:
            for p in group["params"]:
                assert opt.state[p]["exp_avg"].shape == p.shape


def test_state_dict_carries_the_count_and_resumes_mid_fade():
    g, d = nets()
    at(36, g, d)
    g2, d2 = nets()
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    assert g2.growth_state() == d2.growth_state() == (28, 0.6)
    z, x = torch.randn(2, 8), torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(g2(z), g(z), rtol=0, atol=0)
        torch.testing.assert_close(d2(x), d(x), rtol=0, atol=0)


def test_a_fully_grown_net_is_the_net_without_growth():
    g, d = nets()
    at(40, g, d)
    torch.manual_seed(0)
    plain_g, plain_d = StyleGANGenerator((1, 28, 28), **TINY_G).eval(), StyleGANDiscriminator((1, 28, 28), **TINY_D)
    plain_g.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("growth_clock")})
    plain_d.load_state_dict({k: v for k, v in d.state_dict().items() if k.startswith(("from_rgb.", "blocks", "conv",
                             "fc", "head", "mbstd"))})  # fmt: skip
    z, x = torch.randn(3, 8), torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(g(z), plain_g(z), rtol=0, atol=0)
        torch.testing.assert_close(d(x), plain_d(x), rtol=0, atol=0)


def test_nets_without_growth_keep_their_keys_and_outputs():
    """Values recorded with the nets as they were before growth existed (seed 0, these tiny widths)."""
    torch.manual_seed(0)
    g, d = StyleGANGenerator((1, 28, 28), **TINY_G).eval(), StyleGANDiscriminator((1, 28, 28), **TINY_D)
    assert not [k for k in [*g.state_dict(), *d.state_dict()] if "growth" in k or "lower_from_rgbs" in k]
    assert (len(g.state_dict()), len(d.state_dict())) == (48, 18)
    torch.manual_seed(1)
    z = torch.randn(2, 8)
    with torch.no_grad():
        x = g(z)
        out = d(x)
    torch.testing.assert_close(x[0, 0, 10, 8:12], torch.tensor(GOLDEN_G), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, torch.tensor(GOLDEN_D), rtol=1e-4, atol=1e-5)


GOLDEN_G = [2.427472, 2.657067, 2.597626, 2.387783]  # x[0, 0, 10, 8:12]
GOLDEN_D = [0.269949, 0.22646]


def test_bad_options_raise_one_clear_line():
    for kwargs, words in (
        ({"start_resolution": 8}, ["start_resolution 8", "7, 14, 28"]),
        ({"start_resolution": 56}, ["start_resolution 56", "7, 14, 28"]),
        ({"fade_images": -1}, ["fade_images and stable_images >= 0", "-1"]),
        ({"stable_images": -5}, ["fade_images and stable_images >= 0", "-5"]),
    ):
        for net, extra in ((StyleGANGenerator, TINY_G), (StyleGANDiscriminator, TINY_D)):
            with pytest.raises(ValueError) as info:
                net((1, 28, 28), **extra, growth=growth(**kwargs))
            message = str(info.value)
            assert "\n" not in message and all(w in message for w in words), message
    with pytest.raises(ValueError, match="use one of 4, 8, 16, 32"):
        StyleGANDiscriminator((3, 32, 32), **TINY_D, growth=growth(start_resolution=7))
    g, _ = nets()
    with pytest.raises(ValueError, match="images >= 0"):
        g.advance_growth(-4)


def test_the_gan_family_grows_both_nets_and_the_ema_copy_follows(tmp_path):
    torch.manual_seed(0)
    schedule = {"fade_images": 16, "stable_images": 16}
    model = GAN(partial(StyleGANGenerator, **TINY_G, growth=growth(**schedule)),
                partial(StyleGANDiscriminator, **TINY_D, growth=growth(**schedule)), (1, 28, 28))  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(48, 1, 28, 28), torch.zeros(48, dtype=torch.long)), batch_size=8)
    trainer = L.Trainer(max_steps=10, logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, data)  # 5 batches of 8: 40 images, so 14 px faded in (from 16 + 16 = 32 on)
    for net in (model.generator, model.discriminator, model.ema.module):
        assert int(net.growth_clock.images) == 40 and net.growth_state() == (14, 1.0)
    logged = trainer.callback_metrics  # D's resolution and fade-in weight at its last step
    assert float(logged["train/growth_resolution"]) == 14 and float(logged["train/growth_alpha"]) == 1.0
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))  # EMA weights, 14 px upsampled
    assert samples.shape == (4, 1, 28, 28)
    torch.testing.assert_close(samples, samples[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert int(model.generator.growth_clock.images) == 40  # the trained G's own count is back after sampling
