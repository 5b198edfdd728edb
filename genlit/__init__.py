"""genlit: a PyTorch Lightning research framework for generative models.

The public API: the families (LightningModules) and the data modules. They are imported on first use
(PEP 562), so ``import genlit.nets.gpt`` or a language-model run does not pay for the image stack
(``datasets``, PIL, the GAN and VAE modules).
"""

from importlib import import_module

_EXPORTS = {
    "GAN": "genlit.families.gan",
    "VAE": "genlit.families.vae",
    "ImageDataModule": "genlit.data.images",
    "ToyDataModule": "genlit.data.toy",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genlit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
