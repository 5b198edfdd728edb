"""Reverse-process samplers, one file each. Every module of this package is imported here, so a new sampler
is one new file: its class is then known by name to YAML and to ``genlit sample --sampler``."""

import pkgutil
from importlib import import_module

from genlit.diffusion.samplers.base import Denoiser, Sampler, StepSampler
from genlit.diffusion.samplers.ddim import DDIMSampler
from genlit.diffusion.samplers.ddpm import DDPMSampler, posterior
from genlit.diffusion.samplers.dpm_solver import DPMSolverSampler
from genlit.diffusion.samplers.euler import EulerSampler
from genlit.diffusion.samplers.heun import HeunSampler
from genlit.diffusion.samplers.sigma import SigmaSampler

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "Denoiser",
    "EulerSampler",
    "HeunSampler",
    "Sampler",
    "SigmaSampler",
    "StepSampler",
    "posterior",
]
