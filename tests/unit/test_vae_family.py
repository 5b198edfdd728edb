"""The VAE LightningModule: bound ordering, KL schedule, likelihood options, sampling."""

import math
from functools import partial

import pytest
import torch

from genlit import VAE
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder

SHAPE = (1, 8, 8)


def make_vae(**kwargs) -> VAE:
    nets = {"hidden": 32}
    args = {"data_shape": SHAPE, "num_classes": 3, "latent_dim": 4} | kwargs
    return VAE(partial(MLPEncoder, **nets), partial(MLPDecoder, **nets), **args)


def batch(n: int = 64) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(0)) * 2 - 1  # (n, 1, 8, 8)


def test_iw_bound_is_above_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    model = make_vae().eval()
    x_in, target = model.prepare(batch(), "test")
    with torch.no_grad():
        terms = model.elbo_terms(x_in, target, None)
        elbo = -(terms["recon"] + terms["kl"]).mean()
        bounds = [model.importance_weighted_bound(x_in, target, None, k).mean() for k in (1, 10, 100)]
    assert bounds[0] == pytest.approx(float(elbo), abs=2.0)  # L_1 is a single-sample ELBO estimate
    assert bounds[0] < bounds[1] < bounds[2]
    assert bounds[2] > elbo


def test_chunked_bound_equals_one_chunk():
    model = make_vae().eval()
    x_in, target = model.prepare(batch(8), "test")
    with torch.no_grad():
        torch.manual_seed(1)
        whole = model.importance_weighted_bound(x_in, target, None, 12)
        model.hparams.iw_chunk = 5
        torch.manual_seed(1)
        chunked = model.importance_weighted_bound(x_in, target, None, 12)
    assert chunked.shape == (8,)
    assert torch.isfinite(chunked).all() and (chunked - whole).abs().max() < 5.0  # same estimator, other draws


def test_kl_warmup_ramps_to_beta():
    model = make_vae(beta=2.0, kl_warmup_steps=100)
    assert [model.kl_weight(step) for step in (0, 50, 100, 500)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
    assert make_vae(beta=0.5).kl_weight(0) == 0.5  # no warm-up


def test_likelihood_options():
    learned = make_vae(likelihood="gaussian_learned", gaussian_scale=0.5)
    assert isinstance(learned.log_scale, torch.nn.Parameter)
    assert float(learned.log_scale) == pytest.approx(math.log(0.5))
    fixed = make_vae(likelihood="gaussian_fixed")
    assert "log_scale" in dict(fixed.named_buffers())
    assert fixed.dequantization == pytest.approx(math.log(127.5))  # 8-bit bins in [-1, 1]
    assert make_vae().dequantization == 0.0  # Bernoulli on binary pixels
    x_in, target = fixed.prepare(batch(4), "train")
    assert torch.equal(x_in, target)  # Gaussian: the data itself
    x_in, target = make_vae().prepare(batch(4), "train")
    assert set(target.unique().tolist()) <= {0.0, 1.0} and torch.equal(x_in, target * 2 - 1)


def test_evaluation_binarization_is_fixed_per_batch():
    model = make_vae()
    first, second = model.prepare(batch(4), "val", 3)[1], model.prepare(batch(4), "val", 3)[1]
    assert torch.equal(first, second)


def test_samples_and_conditional_labels():
    model = make_vae(conditional=True)
    out = model.sample(6, labels=torch.tensor([0, 1, 2, 0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, *SHAPE) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="this VAE is conditional"):
        model.encode(batch(2))
    with pytest.raises(ValueError, match="needs labelled data"):
        make_vae(conditional=True, num_classes=0)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        make_vae(likelihood="poisson")


def test_numeric_options_fail_loudly():
    with pytest.raises(ValueError, match="gaussian_scale must be > 0 and beta >= 0"):
        make_vae(gaussian_scale=0.0)
    with pytest.raises(ValueError, match="gaussian_scale must be > 0 and beta >= 0"):
        make_vae(beta=-1.0)
    with pytest.raises(ValueError, match="latent_dim, iw_samples and iw_chunk must be >= 1"):
        make_vae(iw_samples=0)


def test_held_out_classes_need_labels():
    from genlit.data.images import ImageDataModule

    with pytest.raises(ValueError, match="held_out_classes needs labels; set --data.label_column"):
        ImageDataModule("unused", label_column=None, held_out_classes=[9])
