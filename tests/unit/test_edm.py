"""EDM (Karras et al. 2022) and the continuous-sigma samplers: preconditioning, the order of Heun's method,
DPM-Solver++ on a Gaussian with the analytic denoiser (EDM and VP schedules), Euler = deterministic DDIM, and the
EDM family (training loss, sampling, clear errors)."""

import math
from functools import partial

import pytest
import torch
from torch import nn

from genlit.diffusion import (
    CosineSchedule,
    DDIMSampler,
    DPMSolverSampler,
    EDMSchedule,
    EulerSampler,
    HeunSampler,
    LinearSchedule,
)
from genlit.diffusion.edm import karras_sigmas
from genlit.families.diffusion import Diffusion
from genlit.families.edm import EDM
from genlit.nets.unet import UNet

MU, STD = 0.3, 0.5  # a 1-D Gaussian "data set"


def gaussian_d(x, sigma, mu=MU, std=STD):
    """The optimal denoiser E[x0 | x0 + sigma n = x] of N(mu, std^2) data."""
    return mu + std**2 / (std**2 + sigma**2) * (x - mu)


def tiny_net(**options):
    return partial(UNet, channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4, **options)


class GaussianF(nn.Module):
    """The F that makes EDM's preconditioned D the optimal denoiser of N(MU, STD^2) data, whatever sigma."""

    def __init__(self, schedule: EDMSchedule) -> None:
        super().__init__()
        self.schedule = schedule

    def forward(self, x_in, c_noise, y=None):
        sigma = (c_noise / self.schedule.noise_label_scale).exp()
        c_skip, c_out, c_in, _ = self.schedule.preconditioning(sigma, x_in.dim())
        x = x_in / c_in
        return (gaussian_d(x, sigma.view(c_skip.shape)) - c_skip * x) / c_out


# ------------------------------------------------------------------------------------------ preconditioning
def test_preconditioning_is_the_identity_at_small_sigma_whatever_the_net():
    schedule = EDMSchedule()
    model = EDM(tiny_net(), data_shape=(1, 8, 8), schedule=schedule)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 1, 8, 8)
    x0, _ = model.denoiser()(x, torch.full((4,), 1e-6))
    assert torch.allclose(x0, x, atol=1e-5)


def test_the_optimal_gaussian_denoiser_goes_from_the_identity_to_the_data_mean():
    schedule = EDMSchedule()
    model = EDM(lambda shape, classes: GaussianF(schedule), data_shape=(1, 2, 2), schedule=schedule, ema_decay=0)
    x = torch.randn(3, 1, 2, 2)
    for sigma, expected in [(1e-4, x), (1e4, torch.full_like(x, MU))]:
        x0, eps = model.denoiser()(x, torch.full((3,), sigma))
        assert torch.allclose(x0, expected, atol=1e-4)
        assert torch.allclose(x0 + sigma * eps, x, atol=1e-3)
    x0, _ = model.denoiser()(x, torch.full((3,), 0.7))
    assert torch.allclose(x0, gaussian_d(x, 0.7), atol=1e-5)


@pytest.mark.parametrize("sigma", [0.01, 0.5, 5.0, 80.0])
def test_the_net_sees_unit_variance_inputs_and_targets(sigma):
    schedule = EDMSchedule(sigma_data=0.5)
    generator = torch.Generator().manual_seed(0)
    y = 0.5 * torch.randn(200_000, generator=generator)  # data with std sigma_data
    x = schedule.add_noise(y, torch.randn(y.shape, generator=generator), torch.full_like(y, sigma))
    c_skip, c_out, c_in, _ = schedule.preconditioning(torch.full_like(y, sigma), 1)
    assert (c_in * x).var().item() == pytest.approx(1, rel=0.02)
    assert ((y - c_skip * x) / c_out).var().item() == pytest.approx(1, rel=0.02)
    assert (schedule.loss_weight(torch.tensor([sigma])) * c_out[0] ** 2).item() == pytest.approx(1, rel=1e-5)


def test_training_sigmas_are_log_normal_and_fall_evenly_into_quartiles():
    schedule = EDMSchedule()
    sigma = schedule.sample_sigmas(100_000, "cpu", torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.02)
    counts = torch.bincount(schedule.quartile(sigma, 4), minlength=4) / len(sigma)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.01)


def test_karras_sigmas():
    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert len(sigmas) == 19 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80) and sigmas[-2].item() == pytest.approx(0.002)
    assert bool((sigmas[:-1].diff() < 0).all())
    roots = sigmas[:-1] ** (1 / 7)
    assert torch.allclose(roots.diff(), roots.diff()[:1].expand(17), atol=1e-12)  # even in sigma^(1/rho)


def test_a_discrete_schedule_gives_the_levels_of_its_own_timesteps_up_to_80():
    schedule = CosineSchedule()
    sigmas = schedule.sampling_sigmas(18)
    table = schedule.ve_sigmas
    assert sigmas[-1] == 0 and sigmas[0] <= 81 and len(sigmas) == 19
    for sigma in sigmas[:-1]:
        assert torch.isclose(table, sigma).any()
    assert LinearSchedule().sampling_sigmas(10, sigma_max=157.4)[0].item() == pytest.approx(157.4, rel=0.01)
    with pytest.raises(ValueError, match=r"sigma_max must be in \(0.01, 157.4\] for this schedule"):
        LinearSchedule().sampling_sigmas(10, sigma_max=1e4)


# ------------------------------------------------------------------------------------------ the solvers
def linear_ode_error(sampler, steps: int) -> float:
    """|x(sigma_min) - exact| for dx/dsigma = (x - D(x, sigma)) / sigma with the Gaussian D (mu = 0): a linear
    ODE whose solution is x(sigma) = x(sigma_0) sqrt((std^2 + sigma^2) / (std^2 + sigma_0^2))."""
    sigmas = karras_sigmas(steps, 0.05, 20.0, 7.0)[:-1].tolist()  # end at sigma_min: every step a full one
    x = torch.tensor([1.0], dtype=torch.float64)
    end = sampler.solve(lambda x, s: gaussian_d(x, s, mu=0.0), x, sigmas, None, None)
    exact = math.sqrt((STD**2 + sigmas[-1] ** 2) / (STD**2 + sigmas[0] ** 2))
    return abs(end.item() - exact)


def test_heun_has_second_order_error_and_euler_first():
    heun = [linear_ode_error(HeunSampler(), n) for n in (41, 81, 161)]
    euler = [linear_ode_error(EulerSampler(), n) for n in (41, 81, 161)]
    for coarse, fine in zip(heun, heun[1:], strict=False):
        assert 3.5 < coarse / fine < 4.5  # halving the step divides the error by about 4
    for coarse, fine in zip(euler, euler[1:], strict=False):
        assert 1.7 < coarse / fine < 2.3
    assert heun[0] < euler[-1]


def test_dpm_solver_recovers_a_gaussian_with_the_analytic_denoiser_edm():
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    schedule = EDMSchedule()

    def denoise(x, sigma):  # the family's denoiser signature: (x, sigma (B,)) -> (x0, eps)
        x0 = gaussian_d(x, sigma)
        return x0, (x - x0) / sigma

    errors = []
    for steps in (20, 100):
        samples = DPMSolverSampler(steps).sample(denoise, noise, schedule)
        assert samples.mean().item() == pytest.approx(MU, abs=0.01)
        errors.append(abs(samples.std().item() - STD))
    assert errors[1] < 0.01 * STD and errors[1] < errors[0] / 5  # 20 steps: 5% off; 100: 0.4%


def test_sde_dpm_solver_recovers_a_gaussian():
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(3))
    samples = DPMSolverSampler(100, eta=1.0).sample(lambda x, sigma: (gaussian_d(x, sigma), None), noise, EDMSchedule())
    assert samples.mean().item() == pytest.approx(MU, abs=0.01)
    assert samples.std().item() == pytest.approx(STD, rel=0.02)


@pytest.mark.parametrize(
    "sampler", [DPMSolverSampler(100), DPMSolverSampler(100, eta=1.0), HeunSampler(50), EulerSampler(500)], ids=repr
)
def test_sigma_samplers_recover_a_gaussian_on_a_vp_schedule(sampler):
    schedule = CosineSchedule()
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(2))

    def denoise(x_t, t):  # the analytic VP denoiser: x_t = a x0 + s eps
        a, s = schedule.coefficients(t, x_t.dim())
        x0 = MU + a * STD**2 / (a**2 * STD**2 + s**2) * (x_t - a * MU)
        return x0, (x_t - a * x0) / s

    samples = sampler.sample(denoise, noise, schedule)
    assert samples.mean().item() == pytest.approx(MU, abs=0.01)
    assert samples.std().item() == pytest.approx(STD, rel=0.01)


def test_euler_on_vp_timesteps_is_deterministic_ddim():
    schedule = LinearSchedule()
    model = Diffusion(tiny_net(), data_shape=(1, 8, 8), schedule=schedule, ema_decay=0).eval()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    denoise = model.denoiser()
    x_t = torch.randn(3, 1, 8, 8)
    ddim = DDIMSampler(10)
    steps = ddim.timesteps(schedule)
    expected = ddim.sample(denoise, x_t, schedule)
    sigmas = [*schedule.ve_sigmas[steps].tolist(), 0.0]
    start = x_t * math.sqrt(1 + sigmas[0] ** 2)
    with torch.no_grad():
        got = EulerSampler(10).solve(schedule.sigma_denoiser(denoise), start, sigmas, None, None)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("stochastic, deterministic", [
    (HeunSampler(10, churn=20), HeunSampler(10)), (DPMSolverSampler(10, eta=1.0), DPMSolverSampler(10)),
], ids=["heun-churn", "sde-dpm"])  # fmt: skip
def test_stochastic_samplers_draw_noise_from_the_per_sample_rng(stochastic, deterministic):
    from genlit.seeding import SampleRNG

    schedule = EDMSchedule()
    model = EDM(lambda shape, classes: GaussianF(schedule), data_shape=(1, 2, 2), schedule=schedule, ema_decay=0)
    a = model.sample(4, sampler=stochastic, generator=SampleRNG(range(4), seed=3))
    b = model.sample(2, sampler=stochastic, generator=SampleRNG(range(2, 4), seed=3))
    assert torch.allclose(a[2:], b, atol=1e-6)
    plain = model.sample(4, sampler=deterministic, generator=SampleRNG(range(4), seed=3))
    assert not torch.allclose(a, plain, atol=1e-3)


# ------------------------------------------------------------------------------------------ the family
def test_edm_trains_and_samples():
    torch.manual_seed(0)
    model = EDM(tiny_net(), data_shape=(1, 8, 8), num_classes=3, conditional=True, ema_decay=0)
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.arange(16) % 3
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss, sigma = model.losses(x, y)
        assert loss.shape == sigma.shape == (16,)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        first = first if first is not None else loss.mean().item()
    assert loss.mean().item() < first
    for sampler in [HeunSampler(4), EulerSampler(4), DPMSolverSampler(4)]:
        samples = model.sample(5, sampler=sampler, guidance_scale=2.0)
        assert samples.shape == (5, 1, 8, 8) and bool(samples.isfinite().all())


def test_nfe_of_each_sampler():
    schedule = EDMSchedule()
    calls = []

    def denoise(x, sigma):
        calls.append(1)
        return torch.zeros_like(x), x / sigma.view(-1, 1)

    for sampler, nfe in [(HeunSampler(18), 35), (EulerSampler(18), 18), (DPMSolverSampler(20), 20)]:
        calls.clear()
        sampler.sample(denoise, torch.randn(2, 3), schedule)
        assert len(calls) == nfe, sampler


@pytest.mark.parametrize("build, message", [
    (lambda: EDM(tiny_net(), data_shape=(1, 8, 8), sampler=DDIMSampler(10)),
     "EDM samples with EulerSampler, HeunSampler or DPMSolverSampler; DDIMSampler runs on the discrete"),
    (lambda: EDM(tiny_net(), data_shape=(1, 8, 8), schedule=LinearSchedule()),
     "EDM takes an EDMSchedule, got LinearSchedule; a discrete schedule belongs to"),
    (lambda: Diffusion(tiny_net(), data_shape=(1, 8, 8), schedule=EDMSchedule()),
     "Diffusion takes a discrete NoiseSchedule, got EDMSchedule; an EDMSchedule belongs to"),
    (lambda: EDM(tiny_net(), data_shape=(1, 8, 8)).sample(2, sampler=DDIMSampler(5)),
     "DDIMSampler runs on discrete timesteps; a model with EDMSchedule samples with EulerSampler"),
    (lambda: EDMSchedule(sigma_min=1.0, sigma_max=0.5), "need 0 < sigma_min < sigma_max"),
    (lambda: HeunSampler(10, churn=-1), "need churn >= 0"),
    (lambda: DPMSolverSampler(10, eta=-1), "eta must be >= 0"),
    (lambda: EDMSchedule(noise_label_scale=0), "noise_label_scale must be > 0"),
], ids=["ddim-on-edm", "vp-in-edm", "edm-in-ddpm", "sample-with-ddim", "sigma-range", "churn", "eta",
        "noise-label-scale"])  # fmt: skip
def test_bad_options_are_one_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()
