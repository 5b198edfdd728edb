"""Diffusion U-Net: shapes at 28/32/64 px, timestep embedding closed form, conditioning, zero init, errors, grads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlit.nets.unet import SelfAttention, UNet, sinusoidal_embedding

SMALL = {"channels": 8, "groups": 4, "num_heads": 2}
# (size, channel_mults, attention_resolutions): 3 levels at 28 px, 4 levels at 32 and 64 px
CONFIGS = [(28, (1, 2, 2), (7,)), (32, (2, 2, 4, 4), (8, 4)), (64, (1, 1, 2, 2), (16,))]


def _perturb_(net: nn.Module, std: float = 0.05) -> nn.Module:
    """Add noise to every parameter, so the zero-initialised layers no longer block the signal."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * std)
    return net


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("size", "mults", "attn"), CONFIGS)
def test_output_shape_matches_input(size, mults, attn, channels):
    torch.manual_seed(0)
    net = _perturb_(UNet((channels, size, size), 0, channel_mults=mults, attention_resolutions=attn, **SMALL))
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([3, 500]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.std() > 0


def test_fresh_net_returns_exact_zeros():
    torch.manual_seed(0)
    net = UNet((1, 28, 28), 10, **SMALL)
    out = net(torch.randn(3, 1, 28, 28), torch.tensor([0, 10, 999]), torch.tensor([0, 5, net.null_label]))
    assert torch.equal(out, torch.zeros_like(out))


def test_float_and_integer_timesteps():
    torch.manual_seed(0)
    net = _perturb_(UNet((1, 28, 28), 0, **SMALL))
    x = torch.randn(2, 1, 28, 28)
    out_int = net(x, torch.tensor([10, 250]))
    torch.testing.assert_close(net(x, torch.tensor([10.0, 250.0])), out_int)
    out_frac = net(x, torch.tensor([10.5, 250.25]))  # non-integer (scaled) times are embedded as floats
    assert out_frac.shape == x.shape and (out_frac - out_int).abs().max() > 1e-6
    torch.testing.assert_close(net(x, torch.tensor(7)), net(x, torch.tensor([7, 7])))  # 0-d t is broadcast


def test_sinusoidal_embedding_closed_form():
    t = torch.tensor([0.0, 1.0, 2.5])
    emb = sinusoidal_embedding(t, 4, max_period=100.0)  # half = 2, freqs = 1 and 100 ** (-1/2) = 0.1
    expected = torch.tensor([[math.cos(s), math.cos(0.1 * s), math.sin(s), math.sin(0.1 * s)] for s in (0.0, 1.0, 2.5)])
    torch.testing.assert_close(emb, expected)
    odd = sinusoidal_embedding(t, 5, max_period=100.0)
    torch.testing.assert_close(odd[:, :4], expected)
    assert torch.equal(odd[:, 4], torch.zeros(3))


def test_sinusoidal_embedding_separates_timesteps():
    emb = sinusoidal_embedding(torch.arange(0, 1000, 7), 32)  # (143, 32)
    dists = torch.cdist(emb, emb) + torch.eye(len(emb)) * 1e3
    assert dists.min() > 1e-2  # every pair of timesteps gets a different embedding
    assert torch.equal(sinusoidal_embedding(torch.tensor([3]), 32), sinusoidal_embedding(torch.tensor([3.0]), 32))


def test_conditional_net_needs_labels():
    net = UNet((1, 28, 28), 10, **SMALL)
    with pytest.raises(ValueError, match="class-conditional"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"labels y of shape \(2,\)"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_labels_and_null_label_change_the_output():
    torch.manual_seed(0)
    net = _perturb_(UNet((1, 28, 28), 10, **SMALL))
    assert net.null_label == 10 and net.label_embed.num_embeddings == 11
    x = torch.randn(1, 1, 28, 28).expand(3, -1, -1, -1)  # one image, three labels
    out = net(x, torch.tensor([100, 100, 100]), torch.tensor([2, 7, net.null_label]))
    assert torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert (out[0] - out[2]).abs().max() > 1e-4


def test_unconditional_net_ignores_labels():
    torch.manual_seed(0)
    net = _perturb_(UNet((3, 32, 32), 0, attention_resolutions=(8,), **SMALL))
    assert net.null_label is None and net.label_embed is None
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 9])
    torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([1, 4])))


def test_bad_size_names_the_fix():
    with pytest.raises(ValueError, match=r"image size 28 cannot be halved 3 times.*at most 3 levels.*to 32"):
        UNet((1, 28, 28), 0, channel_mults=(1, 2, 2, 2), **SMALL)
    with pytest.raises(ValueError, match="square image"):
        UNet((1, 28, 32), 0, **SMALL)
    with pytest.raises(ValueError, match="square image"):
        UNet((2, 28, 28), 0, **SMALL)


def test_bad_attention_resolution_lists_the_sides():
    with pytest.raises(ValueError, match=r"attention_resolutions \[8\].*are \(28, 14, 7\)"):
        UNet((1, 28, 28), 0, attention_resolutions=(8,), **SMALL)
    with pytest.raises(ValueError, match=r"\(32, 16, 8\)"):
        UNet((1, 32, 32), 0, **SMALL)  # the default (7,) belongs to 28 px


def test_groups_and_heads_must_divide_channels():
    with pytest.raises(ValueError, match="groups=8 must divide every channel count"):
        UNet((1, 28, 28), 0, channels=12, groups=8, num_heads=2)
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        UNet((1, 28, 28), 0, channels=8, groups=4, num_heads=3)


def test_wrong_input_shapes_fail_clearly():
    net = UNet((1, 28, 28), 0, **SMALL)
    with pytest.raises(ValueError, match=r"x of shape \(B, 1, 28, 28\)"):
        net(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"timesteps t of shape \(2,\)"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("num_res_blocks", [1, 2])
def test_gradients_reach_every_parameter(num_res_blocks):
    torch.manual_seed(0)
    net = _perturb_(UNet((1, 28, 28), 3, num_res_blocks=num_res_blocks, dropout=0.1, **SMALL))
    y = torch.tensor([0, 1, 2, net.null_label])  # every embedding row is used
    out = net(torch.randn(4, 1, 28, 28), torch.tensor([1, 10, 100, 900]), y)
    out.square().mean().backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead


def test_default_net_size_for_cpu():
    net = UNet((1, 28, 28), 10)
    assert sum(p.numel() for p in net.parameters()) == 720_001 + 11 * 64  # the figure in the module docstring
    # attention at 7x7: after the level-3 res block going down, in the middle, after both level-3 blocks going up
    assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 4
