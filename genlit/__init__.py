"""genlit: a PyTorch Lightning research framework for generative models.

The public API: ``genlit.fit`` / ``load`` / ``show`` / ``evaluate`` / ``runs`` / ``plot`` for notebooks and scripts
(:mod:`genlit.api`), the family contract, every family (LightningModules), every data module and the checkpoint
loader. They are imported on first use (PEP 562), so ``import genlit.nets.gpt`` or a language-model run does not
pay for the image stack (``datasets``, PIL, the GAN and VAE modules).
"""

from importlib import import_module

_EXPORTS = {
    # the family contract and per-sample seeding
    "GenerativeFamily": "genlit.families.base",
    "SampleRNG": "genlit.seeding",
    # the families (and genlit's evaluation classifier)
    "GAN": "genlit.families.gan",
    "ACGAN": "genlit.families.acgan",
    "InfoGAN": "genlit.families.infogan",
    "VAE": "genlit.families.vae",
    "Diffusion": "genlit.families.diffusion",
    "EDM": "genlit.families.edm",
    "Flow": "genlit.families.flow",
    "PixelCNN": "genlit.families.pixelcnn",
    "VQVAE": "genlit.families.vqvae",
    "AutoregressiveLM": "genlit.families.autoregressive",
    "Classifier": "genlit.families.classifier",
    "CycleGAN": "genlit.families.cyclegan",  # translates between two image domains (a Translator, not a sampler)
    # the data modules
    "ImageDataModule": "genlit.data.images",
    "ToyDataModule": "genlit.data.toy",
    "TextDataModule": "genlit.data.text",
    "UnpairedImageDataModule": "genlit.data.unpaired",
    # loading any of them back from a checkpoint
    "load_family": "genlit.checkpoints",
    # the Python API for notebooks and scripts (genlit.api)
    "fit": "genlit.api",
    "load": "genlit.api",
    "show": "genlit.api",
    "evaluate": "genlit.api",
    "runs": "genlit.api",
    "plot": "genlit.api",
    "Run": "genlit.api",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genlit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
