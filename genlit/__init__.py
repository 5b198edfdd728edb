"""genlit: a PyTorch Lightning research framework for generative models.

The public API: the families (LightningModules) and the data modules.
"""

from genlit.data.images import ImageDataModule
from genlit.data.toy import ToyDataModule
from genlit.families.gan import GAN
from genlit.families.vae import VAE

__all__ = ["GAN", "VAE", "ImageDataModule", "ToyDataModule"]
