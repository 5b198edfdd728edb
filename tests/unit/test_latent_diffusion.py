"""The first-stage autoencoder and latent diffusion: loss terms by hand, the measured latent scale, the frozen first
stage, self-contained checkpoints and the errors of bad first stages."""

import math
from functools import partial

import lightning
import pytest
import torch
from torch import nn

from genlit.checkpoints import load_family
from genlit.diffusion import CosineSchedule, DDIMSampler, EDMSchedule, EulerSampler
from genlit.families.autoencoder import KLAutoencoder
from genlit.families.latent_diffusion import LatentDiffusion, LatentEDM
from genlit.nets.autoencoder import KLAutoencoderNet
from genlit.nets.dit import DiT
from tests.conftest import autoencoder_checkpoint

SHAPE = (1, 8, 8)
TINY_DIT = partial(DiT, patch_size=1, hidden_size=16, depth=1, num_heads=2)


@pytest.fixture
def ae_ckpt(tmp_path):
    return autoencoder_checkpoint(tmp_path, SHAPE)  # latents (3, 2, 2)


def ldm(ckpt, **options) -> LatentDiffusion:
    torch.manual_seed(0)
    return LatentDiffusion(TINY_DIT, autoencoder=str(ckpt), data_shape=SHAPE, schedule=CosineSchedule(50),
                           sampler=DDIMSampler(3), ema_decay=0, **options)  # fmt: skip


def images(n=6):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def save(model, path):
    """A checkpoint as ``genlit fit`` writes it (class path, hyperparameters, weights)."""
    class_path = f"{type(model).__module__}.{type(model).__name__}"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"_class_path": class_path, **model.hparams},
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    return path


class StubNet(nn.Module):
    """encode: mean x / 2, logvar log(1/4) everywhere; decode: identity (1x2x2 images and latents)."""

    latent_shape = (1, 2, 2)

    def __init__(self, data_shape):
        super().__init__()
        self.out_conv = nn.Conv2d(1, 1, 1)

    def encode(self, x):
        return x / 2, torch.full_like(x, math.log(0.25))

    def decode(self, z):
        return z


@pytest.mark.parametrize("reconstruction", ["l1", "l2"])
def test_reconstruction_and_kl_terms_by_hand(reconstruction):
    model = KLAutoencoder(StubNet, data_shape=(1, 2, 2), reconstruction=reconstruction, kl_weight=0.1)
    x = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])  # (1, 1, 2, 2)
    terms, out = model.terms(x, torch.Generator().manual_seed(0))
    eps = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    z = x / 2 + 0.5 * eps  # the draw: mean + std * eps, std = sqrt(1/4)
    assert torch.allclose(out, z)
    error = (z - x).abs() if reconstruction == "l1" else (z - x).square()
    assert terms["recon"].item() == pytest.approx(error.sum().item(), rel=1e-5)  # summed over pixels
    # KL = 0.5 sum(mean^2 + var - 1 - log var): means 0.5, -0.5, 0.25, 0 (squares sum to 0.5625), var 1/4
    kl = 0.5 * (0.5625 + 4 * (0.25 - 1 - math.log(0.25)))
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(error.sum().item() + 0.1 * kl, rel=1e-5)


def test_autoencoder_shapes_and_decode_range():
    model = KLAutoencoder(partial(KLAutoencoderNet, latent_channels=3, width=8, channel_mults=(1, 2, 2), groups=4))
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert model.latent_shape == (3, 7, 7) and model.encode(x).shape == (2, 3, 7, 7)
    assert model.encode(x, sample=True).shape == (2, 3, 7, 7)
    out = model.decode(20 * torch.randn(2, 3, 7, 7))
    assert out.shape == (2, 1, 28, 28) and out.abs().max() <= 1


def test_latent_scale_gives_unit_variance(ae_ckpt):
    model = ldm(ae_ckpt)
    x = images(16)
    assert float(model.latent_scale) == 0 and torch.equal(model.scale, torch.ones(()))  # not measured: 1
    scale = model.measure_scale(x)
    assert scale == pytest.approx(1 / model.autoencoder.encode(x).std().item(), rel=1e-5)
    assert model.encode_data(x).std().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(model.decode_latents(model.encode_data(x)), model.autoencoder.reconstruct(x), atol=1e-5)


def test_frozen_autoencoder_gets_no_gradient_and_is_not_optimized(ae_ckpt):
    model = ldm(ae_ckpt)
    loss, _ = model.losses(images(), None)
    loss.mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.autoencoder.parameters())
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    optimized = {id(p) for group in model.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in model.autoencoder.parameters())
    assert {id(p) for p in model.net.parameters()} <= optimized
    assert "autoencoder" not in str(model.weight_copies()) and model.ema is None


def test_checkpoint_samples_without_the_autoencoder_file(ae_ckpt, tmp_path):
    model = ldm(ae_ckpt)
    model.measure_scale(images(16))
    reference = model.sample(3, generator=torch.Generator().manual_seed(5))
    path = save(model, tmp_path / "ldm.ckpt")
    ae_ckpt.unlink()
    loaded = load_family(path)
    assert float(loaded.latent_scale) == float(model.latent_scale) != 0
    samples = loaded.sample(3, generator=torch.Generator().manual_seed(5))
    assert samples.shape == (3, *SHAPE) and torch.allclose(samples, reference, atol=1e-5)
    assert "discriminator" not in str(list(loaded.state_dict()))


def test_latent_edm_samples(ae_ckpt):
    torch.manual_seed(0)
    model = LatentEDM(TINY_DIT, autoencoder=str(ae_ckpt), data_shape=SHAPE, schedule=EDMSchedule(sigma_data=1.0),
                      sampler=EulerSampler(2), ema_decay=0)  # fmt: skip
    loss, _ = model.losses(images(), None)
    assert loss.shape == (6,) and model.net.data_shape == (3, 2, 2)
    assert model.sample(2).shape == (2, *SHAPE)


def test_bad_first_stages_are_clear_errors(ae_ckpt, tmp_path):
    with pytest.raises(ValueError, match="LatentDiffusion needs its first-stage autoencoder; pass --model.init_args"):
        LatentDiffusion(TINY_DIT, data_shape=SHAPE)
    with pytest.raises(FileNotFoundError, match="autoencoder .*missing.ckpt does not exist; pass"):
        ldm(tmp_path / "missing.ckpt")
    not_ae = save(ldm(ae_ckpt), tmp_path / "ldm.ckpt")
    with pytest.raises(ValueError, match="is not a KLAutoencoder checkpoint \\(it holds LatentDiffusion\\); pass"):
        ldm(not_ae)
    with pytest.raises(ValueError, match=r"trained on images of shape \(1, 8, 8\), but the data here has shape "):
        LatentDiffusion(TINY_DIT, autoencoder=str(ae_ckpt), data_shape=(1, 16, 16))


def test_scale_is_measured_once_and_kept(ae_ckpt):
    model = ldm(ae_ckpt)
    model.on_train_batch_start((images(16), None), 0)  # a new run: measured on its first batch
    scale = float(model.latent_scale)
    assert scale == pytest.approx(1 / model.autoencoder.encode(images(16)).std().item(), rel=1e-5)
    model.on_train_batch_start((5 * images(16), None), 1)  # later batches (and a resumed run's) keep it
    assert float(model.latent_scale) == scale
