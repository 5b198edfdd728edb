"""Diffusion process math: noise schedules, prediction targets, samplers and the variational bound.

No trainable parameters here; the family passes its network in as a denoiser.
"""

from genlit.diffusion.samplers import DDIMSampler, DDPMSampler, Sampler
from genlit.diffusion.schedules import CosineSchedule, LinearSchedule, NoiseSchedule

__all__ = ["CosineSchedule", "DDIMSampler", "DDPMSampler", "LinearSchedule", "NoiseSchedule", "Sampler"]
