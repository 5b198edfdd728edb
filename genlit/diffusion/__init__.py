"""Diffusion process math: noise schedules (discrete VP, and EDM's continuous noise levels), prediction targets,
the training loss, samplers and the variational bound.

No trainable parameters here; the family passes its network in (as a denoiser, or to the loss).
"""

from genlit.diffusion.edm import EDMSchedule
from genlit.diffusion.losses import training_losses
from genlit.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    Sampler,
    SigmaSampler,
    StepSampler,
)
from genlit.diffusion.schedules import CosineSchedule, LinearSchedule, NoiseSchedule

__all__ = [
    "CosineSchedule",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "EDMSchedule",
    "EulerSampler",
    "HeunSampler",
    "LinearSchedule",
    "NoiseSchedule",
    "Sampler",
    "SigmaSampler",
    "StepSampler",
    "training_losses",
]
