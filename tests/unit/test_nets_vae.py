"""Convolutional and MLP VAE encoder / decoder nets: shapes, (k, B, Z) latents, conditioning, errors, trainability."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlit.nets.conv_vae import ConvDecoder, ConvEncoder
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder
from genlit.objectives import elbo as E

SIZES = [28, 32, 64]
CHANNELS = [1, 3]
NUM_CLASSES = [0, 10]
LABELS = torch.tensor([0, 3, 9])


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_conv_pair_shapes(size, channels, num_classes):
    torch.manual_seed(0)
    shape = (channels, size, size)
    enc = ConvEncoder(shape, num_classes, 6, width=4, hidden=16)
    dec = ConvDecoder(shape, num_classes, 6, width=4, hidden=16)
    assert enc.latent_dim == dec.latent_dim == 6
    y = LABELS if num_classes else None
    mu, logvar = enc(torch.rand(3, *shape) * 2 - 1, y)
    assert mu.shape == logvar.shape == (3, 6)
    out = dec(mu, y)
    assert out.shape == (3, *shape)
    assert torch.isfinite(out).all() and out.std() > 0
    z = E.reparameterize(mu, logvar, k=5)  # (k, B, Z)
    out_k = dec(z, y)
    assert out_k.shape == (5, 3, *shape)
    torch.testing.assert_close(out_k[2], dec(z[2], y))  # the k samples are decoded independently


def test_conv_decoder_sample_dim_keeps_labels_per_example():
    torch.manual_seed(0)
    dec = ConvDecoder((1, 28, 28), 10, 4, width=4, hidden=8)
    nn.init.normal_(dec.embed.weight, 0.0, 3.0)
    z = torch.randn(1, 4).expand(2, 3, 4)  # (k=2, B=3, Z): one latent for everything
    out = dec(z, LABELS)  # (2, 3, 1, 28, 28)
    torch.testing.assert_close(out[0], out[1])  # same label per example across samples
    assert (out[0, 0] - out[0, 1]).abs().max() > 1e-3  # different labels give different outputs


def test_conditional_encoder_depends_on_label():
    torch.manual_seed(0)
    enc = ConvEncoder((3, 32, 32), 10, 4, width=4, hidden=8)
    x = torch.rand(1, 3, 32, 32).expand(2, -1, -1, -1)
    mu, _ = enc(x, torch.tensor([1, 7]))
    assert (mu[0] - mu[1]).abs().max() > 1e-4


@pytest.mark.parametrize("num_classes", NUM_CLASSES)
@pytest.mark.parametrize("shape", [(2,), (5,), (1, 28, 28), (3, 8, 8)])
def test_mlp_pair_shapes(shape, num_classes):
    torch.manual_seed(0)
    enc = MLPEncoder(shape, num_classes, 3, hidden=16, depth=3)
    dec = MLPDecoder(shape, num_classes, 3, hidden=16, depth=3)
    y = LABELS if num_classes else None
    mu, logvar = enc(torch.randn(3, *shape), y)
    assert mu.shape == logvar.shape == (3, 3)
    assert dec(mu, y).shape == (3, *shape)
    assert dec(E.reparameterize(mu, logvar, k=4), y).shape == (4, 3, *shape)
    n_linear = sum(isinstance(m, nn.Linear) for m in enc.net)
    assert n_linear == 3  # depth counts the linear layers


def test_errors():
    with pytest.raises(ValueError, match="image size 30x30 is not supported by ConvEncoder; use square images of 28"):
        ConvEncoder((1, 30, 30), 0, 8)
    with pytest.raises(ValueError, match="image size 28x32 is not supported by ConvDecoder"):
        ConvDecoder((3, 28, 32), 0, 8)
    with pytest.raises(ValueError, match="2 image channels are not supported by ConvDecoder; use 1 or 3"):
        ConvDecoder((2, 32, 32), 0, 8)
    with pytest.raises(ValueError, match=r"ConvEncoder needs an image data_shape \(C, H, W\)"):
        ConvEncoder((784,), 0, 8)
    with pytest.raises(ValueError, match="activation 'tanhh' is not supported by ConvEncoder; use one of relu"):
        ConvEncoder((1, 28, 28), 0, 8, activation="tanhh")
    with pytest.raises(ValueError, match="depth 1 is too small"):
        MLPEncoder((4,), 0, 2, depth=1)
    with pytest.raises(ValueError, match="MLPDecoder needs a data_shape of positive sizes"):
        MLPDecoder((), 0, 2)


def test_missing_labels_and_bad_latents():
    enc = ConvEncoder((1, 28, 28), 10, 4, width=4, hidden=8)
    dec = ConvDecoder((1, 28, 28), 10, 4, width=4, hidden=8)
    with pytest.raises(ValueError, match=r"ConvEncoder is class-conditional \(num_classes=10\); pass labels y"):
        enc(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="ConvDecoder is class-conditional"):
        dec(torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match=r"ConvDecoder expects labels y of shape \(2,\), got \(3,\)"):
        dec(torch.zeros(5, 2, 4), LABELS)
    with pytest.raises(ValueError, match=r"ConvDecoder expects z of shape \(B, 4\) or \(k, B, 4\), got \(2, 5\)"):
        dec(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    mlp = MLPEncoder((6,), 3, 2)
    with pytest.raises(ValueError, match="MLPEncoder is class-conditional"):
        mlp(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"MLPEncoder expects x of shape \(B, \(6,\)\), got \(2, 5\)"):
        mlp(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="MLPDecoder is class-conditional"):
        MLPDecoder((6,), 3, 2)(torch.zeros(2, 2))
    MLPDecoder((6,), 0, 2)(torch.zeros(2, 2), torch.full((2,), -1))  # unconditional: labels ignored


def _neg_elbo(enc: nn.Module, dec: nn.Module, x01: torch.Tensor, y: torch.Tensor | None, g: torch.Generator):
    mu, logvar = enc(E.from_unit_interval(x01), y)
    z = E.reparameterize(mu, logvar, generator=g)
    return -(E.log_likelihood("bernoulli", dec(z, y), x01) - E.gaussian_kl(mu, logvar)).mean()


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_one_step_lowers_the_loss(kind):
    torch.manual_seed(0)
    shape, y = (1, 28, 28), torch.tensor([1, 2, 3, 4])
    nets = (ConvEncoder, ConvDecoder) if kind == "conv" else (MLPEncoder, MLPDecoder)
    enc, dec = (net(shape, 10, 8) for net in nets)
    x01 = (torch.rand(4, *shape) > 0.7).float()  # a fixed binary batch
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    before = _neg_elbo(enc, dec, x01, y, torch.Generator().manual_seed(0))
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None for p in [*enc.parameters(), *dec.parameters()])  # labels reach both nets
    opt.step()
    after = _neg_elbo(enc, dec, x01, y, torch.Generator().manual_seed(0))  # same noise
    assert after < before - 1.0
