"""DCGAN and MLP generator / discriminator nets: shapes, ranges, conditioning, spectral norm, errors."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from genlit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator

SIZES = [28, 32, 64]
CHANNELS = [1, 3]
NUM_CLASSES = [0, 10]


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_dcgan_generator_shape_and_range(size, channels, num_classes):
    torch.manual_seed(0)
    g = DCGANGenerator((channels, size, size), num_classes, latent_dim=16, width=8)
    assert g.latent_dim == 16
    z = torch.randn(4, 16)
    y = torch.tensor([0, 3, 9, 3]) if num_classes else None
    x = g(z, y)
    assert x.shape == (4, channels, size, size)
    assert x.abs().max() <= 1.0
    assert x.std() > 0  # not a constant image


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_dcgan_discriminator_shape(size, channels, num_classes, norm):
    torch.manual_seed(0)
    d = DCGANDiscriminator((channels, size, size), num_classes, width=8, norm=norm)
    x = torch.rand(4, channels, size, size) * 2 - 1
    y = torch.tensor([0, 3, 9, 3]) if num_classes else None
    out = d(x, y)
    assert out.shape == (4,)
    assert torch.isfinite(out).all()


def test_conditional_generator_depends_on_label():
    torch.manual_seed(0)
    g = DCGANGenerator((1, 28, 28), num_classes=10, latent_dim=8, width=8).eval()
    # make the per-class gains/biases clearly different (init puts them all near 1 / 0)
    for norm in g.norms:
        nn.init.normal_(norm.embed.weight, 0.0, 1.0)
    z = torch.randn(1, 8).expand(2, 8)  # same noise for both rows
    x = g(z, torch.tensor([1, 7]))
    assert (x[0] - x[1]).abs().max() > 1e-3


def test_projection_discriminator_adds_class_term():
    torch.manual_seed(0)
    d = DCGANDiscriminator((3, 32, 32), num_classes=5, width=8, norm="none").eval()
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    y = torch.tensor([0, 4])
    out = d(x, y)
    h = d.features(x).flatten(1)  # (2, F)
    expected = d.head.linear(h).squeeze(1) + (d.head.embed(y) * h).sum(1)
    torch.testing.assert_close(out, expected)
    assert (out[0] - out[1]).abs() > 0


def test_dcgan_init():
    torch.manual_seed(0)
    g = DCGANGenerator((3, 64, 64), latent_dim=100, width=32)
    d = DCGANDiscriminator((3, 64, 64), width=32)
    conv = g.ups[1].weight
    assert abs(conv.mean().item()) < 2e-3 and abs(conv.std().item() - 0.02) < 2e-3
    bn = d.features[3].weight  # first BatchNorm of D
    assert isinstance(d.features[3], nn.BatchNorm2d)
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.01


def test_conditional_generator_bn_gains_start_near_one():
    g = DCGANGenerator((1, 32, 32), num_classes=10, width=8)
    cbn = g.norms[0]
    gains, biases = cbn.embed.weight.chunk(2, dim=1)
    assert abs(gains.mean().item() - 1.0) < 0.01
    assert biases.abs().max() == 0


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
def test_dcgan_spectral_norm_applied(num_classes):
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 28, 28), num_classes, width=8, norm="none", spectral_norm=True)
    wrapped = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(wrapped) == 3 + (1 if num_classes else 0)
    assert all(parametrize.is_parametrized(m, "weight") for m in wrapped)
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([1, 2, 3, 4]) if num_classes else None
    for _ in range(30):  # power iterations run in train mode
        out = d(x, y)
    assert out.shape == (4,) and torch.isfinite(out).all()
    d.eval()
    for m in wrapped:
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05


def test_mlp_spectral_norm_applied():
    torch.manual_seed(0)
    d = MLPDiscriminator((2,), num_classes=3, hidden=16, spectral_norm=True)
    wrapped = [m for m in d.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert len(wrapped) == 4  # 2 hidden linears, head linear, projection embedding
    assert all(parametrize.is_parametrized(m, "weight") for m in wrapped)
    assert d(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])).shape == (5,)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 30, 30), "30x30 is not supported by DCGAN.*28, 32, 64"),
        ((1, 32, 28), "32x28 is not supported"),
        ((2, 28, 28), "2 image channels are not supported.*1 or 3"),
        ((784,), r"needs an image data_shape \(C, H, W\)"),
    ],
)
@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator])
def test_dcgan_bad_shapes(cls, shape, match):
    with pytest.raises(ValueError, match=match):
        cls(shape)


def test_dcgan_bad_norm():
    with pytest.raises(ValueError, match="norm 'instance'.*'batch', 'layer', 'none'"):
        DCGANDiscriminator((1, 28, 28), norm="instance")


def test_conditional_nets_without_labels():
    with pytest.raises(ValueError, match="class-conditional.*pass labels y"):
        DCGANGenerator((1, 28, 28), num_classes=10, width=8)(torch.randn(2, 100))
    with pytest.raises(ValueError, match="class-conditional"):
        DCGANDiscriminator((1, 28, 28), num_classes=10, width=8)(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="class-conditional"):
        MLPGenerator((2,), num_classes=4)(torch.randn(2, 256))
    with pytest.raises(ValueError, match="class-conditional"):
        MLPDiscriminator((2,), num_classes=4)(torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"labels y of shape \(2,\)"):
        MLPDiscriminator((2,), num_classes=4)(torch.randn(2, 2), torch.tensor([[0], [1]]))


def test_unconditional_nets_ignore_labels():
    torch.manual_seed(0)
    g = MLPGenerator((2,), hidden=16).eval()
    z = torch.randn(3, 256)
    torch.testing.assert_close(g(z), g(z, torch.full((3,), -1)))


def test_dcgan_64px_generator_is_fast():
    g = DCGANGenerator((3, 64, 64)).eval()  # the paper's size: latent 100, width 64
    z = torch.randn(8, 100)
    with torch.no_grad():
        g(z)  # warm-up
        start = time.perf_counter()
        x = g(z)
        elapsed = time.perf_counter() - start
    assert x.shape == (8, 3, 64, 64)
    assert elapsed < 2.0, f"64 px generator forward took {elapsed:.2f} s for 8 samples"


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_mlp_shapes(dim, num_classes):
    torch.manual_seed(0)
    g = MLPGenerator((dim,), num_classes, latent_dim=4, hidden=16, depth=3)
    d = MLPDiscriminator((dim,), num_classes, hidden=16, depth=3)
    assert g.latent_dim == 4
    y = torch.tensor([0, 1, 2, 3, 9, 5]) if num_classes else None
    x = g(torch.randn(6, 4), y)
    assert x.shape == (6, dim)
    assert d(x, y).shape == (6,)
    assert sum(isinstance(m, nn.Linear) for m in g.modules()) == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())


def test_mlp_defaults_and_errors():
    g = MLPGenerator((2,))
    assert g.latent_dim == 256
    assert g(torch.randn(3, 256)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"flat data_shape \(D,\), got \(1, 28, 28\)"):
        MLPGenerator((1, 28, 28))
    with pytest.raises(ValueError, match="flat data_shape"):
        MLPDiscriminator((1, 28, 28))
    with pytest.raises(ValueError, match="depth 1 is too small"):
        MLPDiscriminator((2,), depth=1)


def test_conditional_generator_class_embedding_joins_z():
    """The label reaches G's first layer through a class embedding as large as z (class_dim 0: BatchNorm alone)."""
    torch.manual_seed(0)
    g = DCGANGenerator((1, 28, 28), num_classes=10, latent_dim=8, class_dim=6).eval()
    assert g.ups[0].in_channels == 8 + 6
    assert 0.7 < g.class_embed.weight.std().item() < 1.3  # N(0, 1), not DCGAN's N(0, 0.02)
    z = torch.randn(1, 8).expand(2, -1)
    first = g.ups[0](torch.cat([z, g.class_embed(torch.tensor([0, 1]))], 1)[:, :, None, None])  # (2, C, 7, 7)
    assert (first[0] - first[1]).abs().mean() > 0.1 * first.abs().mean()  # different before any BatchNorm
    plain = DCGANGenerator((1, 28, 28), num_classes=10, latent_dim=8, class_dim=0)
    assert plain.class_embed is None and plain.ups[0].in_channels == 8
    unconditional = DCGANGenerator((1, 28, 28), num_classes=0, latent_dim=8)
    assert unconditional.class_embed is None and unconditional.ups[0].in_channels == 8
    with pytest.raises(ValueError, match="class_dim must be >= 0"):
        DCGANGenerator((1, 28, 28), num_classes=10, class_dim=-1)
