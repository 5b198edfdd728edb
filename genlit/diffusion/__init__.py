"""Diffusion process math: noise schedules, prediction targets, the training loss, samplers and the
variational bound.

No trainable parameters here; the family passes its network in (as a denoiser, or to the loss).
"""

from genlit.diffusion.losses import training_losses
from genlit.diffusion.samplers import DDIMSampler, DDPMSampler, Sampler, StepSampler
from genlit.diffusion.schedules import CosineSchedule, LinearSchedule, NoiseSchedule

__all__ = [
    "CosineSchedule",
    "DDIMSampler",
    "DDPMSampler",
    "LinearSchedule",
    "NoiseSchedule",
    "Sampler",
    "StepSampler",
    "training_losses",
]
