"""ELBO terms, free bits, the importance-weighted bound and bits/dim against closed forms and hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from genlit.objectives import elbo as E


def test_kl_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * (mu^2 + var - 1 - logvar): dim 0: 0.5 * (1 + 1 - 1 - 0) = 0.5
    # dim 1: 0.5 * (0 + 2 - 1 - ln 2) = 0.5 * 0.3068528 = 0.1534264
    torch.testing.assert_close(E.kl_per_dim(mu, logvar), torch.tensor([[0.5, 0.1534264]]))
    torch.testing.assert_close(E.gaussian_kl(mu, logvar), torch.tensor([0.6534264]))
    assert E.gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0  # q = prior


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(16, 8, generator=g) * 2, torch.randn(16, 8, generator=g)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(8), torch.ones(8)), 1)
    torch.testing.assert_close(E.gaussian_kl(mu, logvar), kl_divergence(q, p))


def test_bernoulli_log_likelihood_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0, 1.0]])
    # log sigmoid(2) + log(1 - sigmoid(-1)) + log sigmoid(0)
    # = -log(1 + e^-2) - log(1 + e^-1) - log 2 = -0.1269280 - 0.3132617 - 0.6931472
    expected = torch.tensor([-1.1333369])
    torch.testing.assert_close(E.log_likelihood("bernoulli", logits, x), expected)
    # image-shaped data and a leading sample dimension (k, B, ...): summed over all data dims
    logits_img = logits.reshape(1, 1, 1, 3).expand(4, 2, 1, 1, 3)  # (k=4, B=2, C, H, W)
    x_img = x.reshape(1, 1, 1, 3).expand(2, 1, 1, 3)  # (B=2, C, H, W)
    out = E.log_likelihood("bernoulli", logits_img, x_img)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out, expected.expand(4, 2))


@pytest.mark.parametrize("name", ["gaussian_fixed", "gaussian_learned"])
def test_gaussian_log_likelihood_matches_normal(name):
    g = torch.Generator().manual_seed(1)
    mean, x = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    for log_scale in (torch.tensor(-0.7), torch.randn(3, 4, 4, generator=g)):  # scalar and per pixel
        expected = Normal(mean, log_scale.exp()).log_prob(x).flatten(1).sum(1)  # (B,)
        torch.testing.assert_close(E.log_likelihood(name, mean, x, log_scale), expected)
    k_means = torch.randn(7, 5, 3, 4, 4, generator=g)  # (k, B, C, H, W)
    out = E.log_likelihood(name, k_means, x, torch.tensor(0.2))
    torch.testing.assert_close(out, Normal(k_means, math.exp(0.2)).log_prob(x).flatten(2).sum(2))
    with pytest.raises(ValueError, match="needs log_scale"):
        E.log_likelihood(name, mean, x)


def test_float32_under_low_precision_inputs():
    mu, logvar = torch.randn(4, 3, dtype=torch.bfloat16), torch.randn(4, 3, dtype=torch.bfloat16)
    assert E.gaussian_kl(mu, logvar).dtype == torch.float32
    assert E.reparameterize(mu, logvar).dtype == torch.float32
    x = torch.rand(4, 6).round()
    assert E.log_likelihood("bernoulli", torch.randn(4, 6, dtype=torch.bfloat16), x).dtype == torch.float32


def test_unknown_likelihood_name():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; use one of bernoulli, gaussian_fixed"):
        E.check_likelihood_name("poisson")
    with pytest.raises(ValueError, match="gaussian_learned"):
        E.log_likelihood("laplace", torch.zeros(2, 3), torch.zeros(2, 3))
    for name in E.LIKELIHOODS:
        E.check_likelihood_name(name)


def test_free_bits_clamps_the_batch_mean_per_dimension():
    # dim 0: KL_b0 = mu^2 / 2 = 2 and 0.5 (mean 1.25, above 0.5); dim 1: KL = 0.005 (below 0.5)
    mu = torch.tensor([[2.0, 0.1], [1.0, 0.1]], requires_grad=True)
    logvar = torch.zeros(2, 2)
    out = E.free_bits_kl(mu, logvar, free_bits=0.5)
    torch.testing.assert_close(out, torch.tensor([2.0 + 0.5, 0.5 + 0.5]))
    torch.testing.assert_close(out.mean(), torch.tensor(1.25 + 0.5))  # sum_j max(lambda, mean_b KL_bj)
    out.mean().backward()
    assert mu.grad[:, 1].abs().max() == 0  # the clamped dimension gets no gradient
    torch.testing.assert_close(mu.grad[:, 0], torch.tensor([1.0, 0.5]))  # d/dmu mean_b mu_b^2 / 2
    # all dimensions below the threshold: free_bits * Z for every example
    small = E.free_bits_kl(torch.full((3, 4), 0.1), torch.zeros(3, 4), free_bits=0.25)
    torch.testing.assert_close(small, torch.full((3,), 0.25 * 4))
    # 0 gives the plain KL
    torch.testing.assert_close(E.free_bits_kl(mu, logvar, 0.0), E.gaussian_kl(mu, logvar))


def test_reparameterize_shapes_statistics_and_gradients():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    assert E.reparameterize(mu, logvar).shape == (1, 2)
    assert E.reparameterize(mu, logvar, k=1).shape == (1, 1, 2)
    z = E.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0), k=20000)  # (k, B, Z)
    assert z.shape == (20000, 1, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([[1.0, -2.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([[1.0, 2.0]]), atol=0.05, rtol=0)
    again = E.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0), k=20000)
    assert torch.equal(z, again)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((1, 2), 20000.0))
    assert logvar.grad.abs().min() > 0
    with pytest.raises(ValueError, match="k >= 1"):
        E.reparameterize(mu, logvar, k=0)


def test_log_normal_densities():
    g = torch.Generator().manual_seed(2)
    z, mu, logvar = torch.randn(3, 4, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    torch.testing.assert_close(E.log_normal_std(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)  # (k, B)
    torch.testing.assert_close(E.log_normal(z, mu, logvar), expected)


def test_iw_bound_by_hand_and_k1_is_the_elbo_sample():
    # log mean(exp([0, ln 3])) = log 2
    log_w = torch.tensor([[0.0], [math.log(3.0)]])  # (k=2, B=1)
    torch.testing.assert_close(E.iw_bound(log_w, torch.zeros(2, 1), torch.zeros(2, 1)), torch.tensor([math.log(2.0)]))
    g = torch.Generator().manual_seed(3)
    lpx, lpz, lqz = torch.randn(1, 6, generator=g), torch.randn(1, 6, generator=g), torch.randn(1, 6, generator=g)
    torch.testing.assert_close(E.iw_bound(lpx, lpz, lqz), (lpx + lpz - lqz)[0])


SIGMA, X0 = 0.5, 1.5  # z ~ N(0, 1), x | z ~ N(z, SIGMA^2), so p(x) = N(0, 1 + SIGMA^2)
LOG_PX = -0.5 * (math.log(2 * math.pi * (1 + SIGMA**2)) + X0**2 / (1 + SIGMA**2))  # -1.9305103
POST_MEAN, POST_VAR = X0 / (1 + SIGMA**2), SIGMA**2 / (1 + SIGMA**2)  # the exact posterior


def _linear_gaussian_bound(q_mean: float, q_var: float, k: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """IW bounds (batch,) of the linear-Gaussian model at x = X0, one independent draw per row."""
    mu, logvar = torch.full((batch, 1), q_mean), torch.full((batch, 1), math.log(q_var))
    x = torch.full((batch, 1), X0)
    z = E.reparameterize(mu, logvar, generator=g, k=k)  # (k, B, 1)
    log_px_z = E.log_likelihood("gaussian_fixed", z, x, torch.tensor(math.log(SIGMA)))  # (k, B)
    return E.iw_bound(log_px_z, E.log_normal_std(z), E.log_normal(z, mu, logvar))  # (B,)


def test_iw_bound_tightens_with_k_towards_log_px():
    g = torch.Generator().manual_seed(0)
    q_mean, q_var = POST_MEAN + 0.5, 1.5 * POST_VAR  # a deliberately imperfect posterior
    # closed-form ELBO: E_q log N(X0; z, SIGMA^2) - KL(q || p)
    expected_ll = -0.5 * math.log(2 * math.pi * SIGMA**2) - ((X0 - q_mean) ** 2 + q_var) / (2 * SIGMA**2)
    kl = E.gaussian_kl(torch.tensor([[q_mean]]), torch.tensor([[math.log(q_var)]])).item()
    elbo = expected_ll - kl  # -2.6028, log p(x) = -1.9305
    means, errs = [], []
    for k, batch in ((1, 8000), (10, 8000), (100, 40000), (1000, 8000)):  # ~ equal standard errors
        bound = _linear_gaussian_bound(q_mean, q_var, k, batch, g)
        means.append(bound.mean().item())
        errs.append(bound.std().item() / math.sqrt(batch))
        assert means[-1] <= LOG_PX + 4 * errs[-1]  # a lower bound on average
    assert abs(means[0] - elbo) < 4 * errs[0]  # k = 1 is the ELBO
    for i in range(3):  # tightens with k, beyond the Monte Carlo error
        assert means[i + 1] - means[i] > 3 * math.hypot(errs[i], errs[i + 1])
    assert means[1] > elbo + 0.5
    assert abs(means[-1] - LOG_PX) < 0.005  # k = 1000 is close to log p(x)


def test_iw_bound_is_exact_with_the_true_posterior():
    g = torch.Generator().manual_seed(1)
    for k in (1, 10, 100):
        bound = _linear_gaussian_bound(POST_MEAN, POST_VAR, k, 64, g)
        torch.testing.assert_close(bound, torch.full((64,), LOG_PX), atol=1e-5, rtol=0)


def test_bits_per_dim_arithmetic():
    d = 784
    assert E.bits_per_dim(d * math.log(2.0), d) == pytest.approx(1.0)
    assert E.bits_per_dim(86.0, d) == pytest.approx(86.0 / (784 * 0.6931472), rel=1e-6)  # 0.158255
    assert E.uniform_dequantization_offset(1) == pytest.approx(math.log(127.5))  # 4.8481164
    assert E.uniform_dequantization_offset(3072) == pytest.approx(3072 * 4.8481164, rel=1e-7)
    assert E.uniform_dequantization_offset(10, bin_width=1 / 256) == pytest.approx(10 * math.log(256))
    # a continuous NLL of 0 nats on 8-bit data is log2(127.5) = 6.9943534 bits per dimension
    per_dim = E.uniform_dequantization_offset(1)
    assert E.bits_per_dim(0.0, d, per_dim) == pytest.approx(6.9943534)
    assert E.bits_per_dim(d * math.log(2.0), d, per_dim) == pytest.approx(7.9943534)
    assert E.bits_per_dim(E.uniform_dequantization_offset(d), d) == pytest.approx(6.9943534)
    out = E.bits_per_dim(torch.tensor([0.0, 3 * math.log(2.0)]), 3)
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_dims >= 1"):
        E.bits_per_dim(1.0, 0)


def test_binarize_and_unit_interval():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.3, 1.0]).expand(20000, 3)
    b = E.binarize(p, generator=g)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[:, 0].sum() == 0 and b[:, 2].min() == 1
    assert abs(b[:, 1].mean().item() - 0.3) < 0.015
    assert not torch.equal(E.binarize(p[:100]), E.binarize(p[:100]))  # a fresh draw every call
    x = torch.tensor([-1.0, 0.0, 1.0, 1.0000001])
    torch.testing.assert_close(E.to_unit_interval(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(E.from_unit_interval(E.to_unit_interval(x[:3])), x[:3])
