"""Bad benchmark options are one clear argparse error, not a traceback."""

import argparse

import pytest

from benchmarks.args import positive_int
from benchmarks.diffusion_samplers import parse_sampler
from genlit.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler


@pytest.mark.parametrize("text", ["0", "-3", "ten", "1.5"])
def test_positive_int_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="integer >= 1"):
        positive_int(text)


def test_positive_int_accepts():
    assert positive_int("7") == 7


def test_parse_sampler():
    ddim = parse_sampler("DDIM-50-eta0.5")
    assert isinstance(ddim, DDIMSampler) and ddim.num_steps == 50 and ddim.eta == 0.5
    assert parse_sampler("DDIM-20").eta == 0.0
    ddpm = parse_sampler("DDPM-1000")
    assert isinstance(ddpm, DDPMSampler) and ddpm.num_steps == 1000
    heun = parse_sampler("Heun-18-churn40")
    assert isinstance(heun, HeunSampler) and heun.num_steps == 18 and heun.churn == 40
    assert isinstance(parse_sampler("DPM-20"), DPMSolverSampler) and isinstance(parse_sampler("Euler-35"), EulerSampler)
    assert parse_sampler("DPM-20-eta1").eta == 1.0 and parse_sampler("DPM-20").eta == 0.0


@pytest.mark.parametrize(
    "name", ["DDIM", "DDIM-50-eta1.2.3", "DDPM-1000-eta1", "ddim-50", "DDIM-0", "DPM-20-churn1", "Heun-0"]
)
def test_parse_sampler_rejects(name):
    with pytest.raises(argparse.ArgumentTypeError, match="sampler"):
        parse_sampler(name)


def test_the_plain_loops_cosine_schedule_is_genlits():
    import torch

    from benchmarks.ldm_throughput import cosine_alpha_bar
    from genlit.diffusion import CosineSchedule

    assert torch.allclose(cosine_alpha_bar(), CosineSchedule().alpha_bar.float(), rtol=1e-5, atol=1e-7)
