"""Diffusion process math: schedules, targets, samplers and the variational bound against closed forms."""

import math

import pytest
import torch

from genlit.diffusion import CosineSchedule, DDIMSampler, DDPMSampler, LinearSchedule
from genlit.diffusion.likelihood import (
    denoising_term,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_term,
    stratified_timesteps,
)
from genlit.diffusion.targets import check_target, min_snr_weight, split_prediction, training_target
from genlit.seeding import SampleRNG

SCHEDULES = [LinearSchedule(), CosineSchedule()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_alpha_bar_decreases_from_near_one_to_near_zero(schedule):
    alpha_bar = schedule.alpha_bar
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert 0.999 < alpha_bar[0] < 1 and 0 < alpha_bar[-1] < 1e-3
    assert torch.allclose(alpha_bar, torch.cumprod(1 - schedule.betas, 0))


def test_linear_schedule_endpoints_and_snr():
    schedule = LinearSchedule(1000, 1e-4, 0.02)
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(0.02)
    snr = schedule.snr(torch.tensor([0, 999]))
    assert snr[0].item() == pytest.approx((1 - 1e-4) / 1e-4, rel=1e-4)
    # alpha_bar_T = prod(1 - beta_t) of the 1000 linear betas ~ 4.0e-5 (Ho et al.'s choice makes x_T ~ N(0, I))
    assert snr[1].item() == pytest.approx(4.04e-5, rel=0.02)
    snr_all = schedule.snr(torch.arange(1000))
    assert (snr_all[1:] < snr_all[:-1]).all()


def test_cosine_schedule_follows_its_closed_form():
    schedule, s = CosineSchedule(1000, offset=0.008), 0.008
    t = torch.tensor([0, 250, 500, 750, 990])
    f = lambda u: math.cos((u / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(u + 1) / f(0) for u in t.tolist()], dtype=torch.float64)
    assert torch.allclose(schedule.alpha_bar_at(t).double(), expected, rtol=1e-4)
    assert schedule.betas.max().item() <= 0.999
    assert schedule.alpha_bar_at(torch.tensor([-1])).item() == 1.0  # the clean data


def test_add_noise_has_the_marginal_mean_and_variance():
    schedule = LinearSchedule()
    t = torch.full((200_000,), 300)
    x0 = torch.full((200_000, 1), 0.5)
    x_t = schedule.add_noise(x0, torch.randn_like(x0), t)
    alpha_bar = schedule.alpha_bar[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.5, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.02)


def test_respaced_timesteps_descend_from_last_to_first():
    schedule = LinearSchedule(1000)
    steps = schedule.respaced(50)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps.unique()) == 50
    assert (steps[1:] < steps[:-1]).all()
    assert schedule.respaced(None).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match=r"sampling steps must be in \[1, 1000\]"):
        schedule.respaced(1001)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_prediction_targets_convert_back_exactly(kind):
    schedule = CosineSchedule(100)
    x0, noise = torch.rand(8, 1, 4, 4) * 2 - 1, torch.randn(8, 1, 4, 4)
    t = torch.randint(100, (8,))
    x_t = schedule.add_noise(x0, noise, t)
    x0_hat, eps_hat = split_prediction(kind, training_target(kind, x0, noise, t, schedule), x_t, t, schedule)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-4)


def test_clipping_keeps_x0_in_range_and_eps_consistent():
    schedule = LinearSchedule(100)
    x_t, t = torch.randn(4, 3) * 3, torch.full((4,), 10)
    x0, eps = split_prediction("x0", x_t, x_t, t, schedule, clip=True)
    assert x0.abs().max() <= 1
    assert torch.allclose(schedule.add_noise(x0, eps, t), x_t, atol=1e-5)


def test_min_snr_weights():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert torch.allclose(min_snr_weight("x0", snr, 5.0), torch.tensor([0.5, 5.0, 5.0]))
    assert torch.allclose(min_snr_weight("eps", snr, 5.0), torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(min_snr_weight("v", snr, 5.0), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))


def test_unknown_target_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown prediction target 'score'; use one of eps, x0, v"):
        check_target("score")


def oracle(schedule, noise):
    """A denoiser that returns the true noise of every x_t on the path of (x0, noise)."""

    def denoise(x_t, t):
        return split_prediction("eps", noise, x_t, t, schedule)

    return denoise


@pytest.mark.parametrize("steps", [1000, 50, 7])
def test_ddim_with_eta_zero_is_deterministic_and_exact_for_the_true_noise(steps):
    schedule = LinearSchedule()
    x0, noise = torch.rand(6, 1, 3, 3) * 2 - 1, torch.randn(6, 1, 3, 3)
    x_last = schedule.add_noise(x0, noise, torch.full((6,), 999))
    sampler = DDIMSampler(steps, eta=0.0)
    first = sampler.sample(oracle(schedule, noise), x_last, schedule, SampleRNG(range(6), 1))
    again = sampler.sample(oracle(schedule, noise), x_last, schedule, SampleRNG(range(6), 2))
    assert torch.equal(first, again)
    assert torch.allclose(first, x0, atol=1e-3)  # exact up to float32 rounding over the steps
    inverted = sampler.invert(oracle(schedule, noise), x0, schedule)
    assert torch.allclose(inverted, x_last, atol=1e-4)


SAMPLERS = [DDPMSampler(None), DDPMSampler(None, "beta"), DDIMSampler(None, eta=1.0), DDIMSampler(None, eta=0.0)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_sampling_with_the_optimal_denoiser_recovers_a_gaussian(sampler):
    """For data N(m, v) the optimal denoiser is E[x0 | x_t] = m + a v (x_t - a m) / (a^2 v + s^2). Ancestral
    sampling over all T steps (DDPM, or DDIM with eta = 1, the same chain) and the deterministic DDIM ODE
    recover the data's mean and variance. (Few ancestral steps would not: the reverse variance then misses
    the uncertainty of x0 given x_t.)"""
    schedule, m, v = LinearSchedule(), 0.3, 0.2**2

    def optimal(x_t, t):
        a, s = schedule.coefficients(t, x_t.dim())
        x0 = m + a * v * (x_t - a * m) / (a**2 * v + s**2)
        return x0, (x_t - a * x0) / s

    torch.manual_seed(0)  # rng=None: the steps' noise comes from torch's global generator
    samples = sampler.sample(optimal, torch.randn(10_000, 1), schedule)
    assert samples.mean().item() == pytest.approx(m, abs=0.01)
    assert samples.std().item() == pytest.approx(0.2, rel=0.04)


def test_normal_kl_matches_torch_distributions():
    p = torch.distributions.Normal(torch.tensor(0.3), torch.tensor(0.5))
    q = torch.distributions.Normal(torch.tensor(-0.2), torch.tensor(1.5))
    expected = torch.distributions.kl_divergence(p, q)
    got = normal_kl(torch.tensor(0.3), torch.tensor(0.25).log(), torch.tensor(-0.2), torch.tensor(2.25).log())
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("mean, std", [(0.0, 0.05), (0.98, 0.01), (-0.6, 0.3), (0.2, 1e-4)])
def test_discretized_gaussian_sums_to_one_over_the_256_levels(mean, std):
    levels = torch.arange(256) / 127.5 - 1  # (256,)
    log_p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(2 * math.log(std)))
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    if std < 0.05:  # a narrow Gaussian puts most mass on the nearest level (wide ones pile up in the end bins)
        assert log_p.argmax().item() == (levels - mean).abs().argmin().item()


def test_bound_terms_vanish_for_a_perfect_denoiser_and_prior_term_is_closed_form():
    schedule = LinearSchedule()
    x0 = torch.randint(256, (3, 1, 4, 4)) / 127.5 - 1
    x_t = schedule.add_noise(x0, torch.randn_like(x0), torch.full((3,), 500))
    assert torch.allclose(denoising_term(schedule, x0, x_t, 500, x0), torch.zeros(3), atol=1e-5)
    assert (denoising_term(schedule, x0, x_t, 500, x0 + 0.1) > 0).all()
    alpha_bar = schedule.alpha_bar[-1].item()
    expected = 0.5 * (-1 - math.log(1 - alpha_bar) + (1 - alpha_bar) + alpha_bar * x0.square()).flatten(1).sum(1)
    assert torch.allclose(prior_term(schedule, x0), expected.float(), atol=1e-4)


def test_stratified_timesteps_cover_1_to_T_minus_1():
    steps, weights = stratified_timesteps(1000, 10, torch.Generator().manual_seed(0))
    assert len(steps) == 10 and sum(weights) == 999
    edges = torch.linspace(1, 1000, 11).round().long().tolist()
    assert all(lo <= t < hi for t, lo, hi in zip(steps, edges[:-1], edges[1:], strict=True))
    assert stratified_timesteps(10, None) == (list(range(1, 10)), [1.0] * 9)


def test_stratified_estimate_of_a_sum_is_unbiased():
    f = lambda t: (t / 100) ** 3  # noqa: E731 - a skewed term, like the bound's
    exact = sum(f(t) for t in range(1, 100))
    generator = torch.Generator().manual_seed(0)
    draws = [sum(w * f(t) for t, w in zip(*stratified_timesteps(100, 4, generator), strict=True)) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LinearSchedule(1), "num_steps >= 2"),
        (lambda: LinearSchedule(100, 0.02, 1e-4), "need 0 < beta_start <= beta_end < 1"),
        (lambda: CosineSchedule(100, offset=0.0), "need offset > 0"),
        (lambda: DDPMSampler(10, variance="large"), "unknown DDPM variance 'large'; use posterior or beta"),
        (lambda: DDIMSampler(10, eta=-0.1), "DDIM eta must be >= 0"),
        (lambda: DDIMSampler(0), "num_steps must be >= 1"),
    ],
)
def test_bad_schedule_and_sampler_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
