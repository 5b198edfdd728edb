"""StyleGAN2 nets: modulated conv against closed forms, truncation, style mixing, w_avg, noise modes,
shapes, size errors and gradient flow (tiny widths, so the file runs in seconds on one CPU thread)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genlit.nets.style_layers import MinibatchStdDev, ModulatedConv2d
from genlit.nets.stylegan import StyleGANDiscriminator, StyleGANGenerator

TINY = {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "channels": 4, "max_channels": 8}
TINY_D = {"channels": 4, "max_channels": 8}


def tiny_generator(shape=(1, 28, 28), num_classes=0, **kwargs) -> StyleGANGenerator:
    """A tiny generator whose noise strengths are non-zero, so that the noise inputs matter."""
    torch.manual_seed(0)
    g = StyleGANGenerator(shape, num_classes, **{**TINY, **kwargs})
    with torch.no_grad():
        for layer in g.layers:
            layer.noise.strength.fill_(0.5)
    return g


def test_demodulation_gives_unit_output_variance():
    torch.manual_seed(0)
    x = torch.randn(16, 64, 16, 16)  # unit-variance i.i.d. input
    w = torch.randn(16, 32)
    for demodulate in (True, False):
        conv = ModulatedConv2d(64, 32, 3, w_dim=32, demodulate=demodulate)
        with torch.no_grad():
            conv.affine.bias.fill_(3.0)  # styles around 3, far from 1
            out = conv(x, w)[:, :, 1:-1, 1:-1]  # (B, 32, 14, 14): interior, no zero padding involved
        var = out.var(dim=(0, 2, 3))  # (32,)
        if demodulate:
            assert var.min() > 0.8 and var.max() < 1.25, var
        else:
            assert var.min() > 2.0, var  # about E[s^2] ~ 10 without demodulation


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_matches_hand_computation(demodulate, up):
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, w_dim=8, demodulate=demodulate, up=up)
    assert torch.all(conv.affine.bias == 1.0)  # StyleGAN2: style bias initialised to 1
    x, w = torch.randn(2, 4, 6, 6), torch.randn(2, 8)
    out = conv(x, w)
    assert out.shape == (2, 5, 12, 12) if up else (2, 5, 6, 6)
    for b in range(2):
        style = conv.affine.weight @ w[b] / math.sqrt(8) + conv.affine.bias  # (4,)
        weight = conv.weight / math.sqrt(4 * 9) * style[None, :, None, None]  # (5, 4, 3, 3)
        if demodulate:
            weight = weight / torch.sqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up:
            xb = F.interpolate(xb, scale_factor=2, mode="bilinear", align_corners=False)
        expected = F.conv2d(xb, weight, padding=1)
        torch.testing.assert_close(out[b : b + 1], expected, atol=1e-5, rtol=1e-5)


def test_truncation_psi_zero_gives_the_mean_image():
    g = tiny_generator()
    g.train()
    g(torch.randn(16, 8))  # moves w_avg away from its initial zeros
    g.eval()
    with torch.no_grad():
        a, b = g(torch.randn(3, 8), truncation_psi=0.0), g(torch.randn(3, 8), truncation_psi=0.0)
        mean = g.synthesis(g.w_avg.expand(3, g.num_ws, -1))  # (3, C, H, W)
        free = g(torch.randn(3, 8))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, mean)
    torch.testing.assert_close(a[0], a[1])
    assert not torch.allclose(free, a, atol=1e-4)


def test_truncation_cutoff_only_touches_the_first_ws():
    g = tiny_generator()
    g.w_avg.normal_()
    ws = torch.randn(2, g.num_ws, g.w_dim)
    out = g.truncate(ws, psi=0.5, cutoff=2)
    torch.testing.assert_close(out[:, :2], g.w_avg + 0.5 * (ws[:, :2] - g.w_avg))
    torch.testing.assert_close(out[:, 2:], ws[:, 2:])


def test_style_mixing_combines_two_latents():
    g = tiny_generator().eval()
    z1, z2, z3 = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        mixed = g.mix(z1, z2, crossover=2)
        only1, only2 = g(z1), g(z2)
        torch.testing.assert_close(g.mix(z1, z2, crossover=g.num_ws), only1)
        torch.testing.assert_close(g.mix(z1, z2, crossover=0), only2)
        assert not torch.allclose(mixed, only1, atol=1e-4)
        assert not torch.allclose(mixed, only2, atol=1e-4)
        assert not torch.allclose(g.mix(z1, z3, crossover=2), mixed, atol=1e-4)
    with pytest.raises(ValueError, match="crossover"):
        g.mix(z1, z2, crossover=g.num_ws + 1)


def test_mixing_regularisation_in_training_only_by_default():
    g = tiny_generator(mixing_prob=1.0)
    z = torch.randn(4, 8)
    with torch.no_grad():
        g.train()
        plain = g(z, noise_mode="none", mixing_prob=0.0)
        torch.testing.assert_close(g(z, noise_mode="none", mixing_prob=0.0), plain)
        assert not torch.allclose(g(z, noise_mode="none"), plain, atol=1e-4)  # the constructor's mixing_prob
        g.eval()
        torch.testing.assert_close(g(z, noise_mode="none"), plain)  # no mixing in eval mode
    with pytest.raises(ValueError, match="mixing_prob"):
        StyleGANGenerator((1, 28, 28), **TINY, mixing_prob=1.5)


def test_w_avg_tracks_training_forwards_only():
    g = tiny_generator()
    z = torch.randn(8, 8)
    assert g.w_avg.shape == (8,) and torch.all(g.w_avg == 0)
    g.train()
    with torch.no_grad():
        g(z)
        expected = 0.005 * g.mapping(z).mean(dim=0)  # 0.995 * 0 + (1 - 0.995) * batch mean
    torch.testing.assert_close(g.w_avg, expected)
    g.eval()
    before = g.w_avg.clone()
    with torch.no_grad():
        g(torch.randn(8, 8))
    torch.testing.assert_close(g.w_avg, before, rtol=0, atol=0)


@pytest.mark.parametrize(("shape", "num_ws"), [((1, 28, 28), 6), ((3, 32, 32), 8), ((1, 64, 64), 10)])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_shapes(shape, num_ws, num_classes):
    g = tiny_generator(shape, num_classes)
    d = StyleGANDiscriminator(shape, num_classes, **TINY_D)
    assert (g.latent_dim, g.w_dim, g.num_ws) == (8, 8, num_ws)
    y = torch.tensor([0, 3, 9, 3, 1, 2]) if num_classes else None
    with torch.no_grad():
        x = g(torch.randn(6, 8), y)
        assert g.mapping(torch.randn(6, 8), y).shape == (6, 8)
        assert x.shape == (6, *shape) and x.std() > 0
        assert d(x, y).shape == (6,)
        assert d(x[:5], None if y is None else y[:5]).shape == (5,)  # 5: mbstd falls back to groups of 1
    if num_classes:
        with pytest.raises(ValueError, match="labels"):
            g(torch.randn(2, 8))
        with pytest.raises(ValueError, match="labels"):
            d(x)


def test_minibatch_stddev_against_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 3, 3)
    out = MinibatchStdDev(group_size=4, num_channels=1)(x)  # 6 = 3 * 2: groups of 3, {0, 2, 4} and {1, 3, 5}
    assert out.shape == (6, 3, 3, 3)
    torch.testing.assert_close(out[:, :2], x)
    for i in range(6):
        group = x[i % 2 :: 2]  # (3, 2, 3, 3)
        expected = group.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 2], torch.full((3, 3), expected.item()))


@pytest.mark.parametrize("shape", [(1, 30, 30), (1, 32, 28), (1, 7, 7), (1, 4, 4), (1, 36, 36)])
@pytest.mark.parametrize("net", [StyleGANGenerator, StyleGANDiscriminator])
def test_bad_size_raises_one_line_naming_the_sizes(shape, net):
    with pytest.raises(ValueError) as info:
        net(shape, 0)
    message = str(info.value)
    assert "\n" not in message
    assert "base * 2**n" in message and "4..7" in message and "28, 32" in message


def test_bad_channels_and_noise_mode_raise():
    with pytest.raises(ValueError, match="use 1 or 3"):
        StyleGANGenerator((2, 32, 32), **TINY)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_generator()(torch.randn(2, 8), noise_mode="fixed")


def test_eval_sampling_is_deterministic_and_training_is_not():
    g = tiny_generator()
    z = torch.randn(4, 8)
    with torch.no_grad():
        g.eval()
        sample = g(z)
        torch.testing.assert_close(g(z), sample, rtol=0, atol=0)
        torch.testing.assert_close(g(z[1:3]), sample[1:3])  # sample i depends on z_i only
        g.train()
        assert not torch.allclose(g(z), g(z), atol=1e-4)  # fresh random noise each call
        torch.testing.assert_close(g(z, noise_mode="const"), sample)
        torch.testing.assert_close(g(z, noise_mode="none"), g(z, noise_mode="none"))


@pytest.mark.parametrize("num_classes", [0, 10])
def test_gradients_reach_every_parameter(num_classes):
    g = tiny_generator((1, 28, 28), num_classes, mixing_prob=0.5)
    d = StyleGANDiscriminator((1, 28, 28), num_classes, **TINY_D)
    y = torch.tensor([0, 1, 2, 3]) if num_classes else None
    logits = d(g(torch.randn(4, 8), y), y)  # training mode: random noise, style mixing
    F.softplus(-logits).mean().backward()
    for name, net in (("G", g), ("D", d)):
        for pname, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname}"


def test_tanh_output_squashes_the_linear_image():
    torch.manual_seed(0)
    linear = StyleGANGenerator((1, 28, 28), **TINY).eval()
    squashed = StyleGANGenerator((1, 28, 28), **TINY, tanh_output=True).eval()
    squashed.load_state_dict(linear.state_dict())  # no parameter of its own: the same keys
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(squashed(z), torch.tanh(linear(z)))
    assert linear(z).abs().max() > 1  # at init the linear image leaves [-1, 1]
