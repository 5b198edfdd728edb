"""Latent diffusion: a diffusion model of a frozen autoencoder's latents (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", https://arxiv.org/abs/2112.10752).

:class:`LatentSpace` turns a formulation of :class:`~genlit.families.denoising.DenoisingFamily` into its latent
version through the hooks the base offers (``latent_shape``, ``encode_data``, ``decode_latents``):
:class:`LatentDiffusion` (DDPM, :class:`~genlit.families.diffusion.Diffusion`) and :class:`LatentEDM`
(:class:`~genlit.families.edm.EDM`). The process runs on z = scale * E(x), E the posterior mean of a
:class:`~genlit.families.autoencoder.KLAutoencoder`; samples are decoded by its decoder D(z / scale).

The first stage is given by checkpoint path (``autoencoder: path/to/autoencoder.ckpt``, a ``genlit fit`` of
``experiments/diffusion/autoencoder_mnist.yaml``) and kept frozen: no gradient, not in the optimizer, not in the
EMA. Its weights become part of this model's state dict and what rebuilds it (its class and hyperparameters, the
discriminator left out) becomes the hyperparameter ``first_stage``, so a latent diffusion checkpoint samples, tests
and resumes without the autoencoder's file.

The scale is measured, not configured (the paper's section 4.3.2 and appendix G): at the first training batch of a
new run, 1 / std of that batch's latents (over all ranks), so the diffusion sees latents of unit variance whatever
the autoencoder's KL weight left them at. It is the buffer ``latent_scale``, saved with the weights, so a resumed
run and sampling use the same value (a model never trained uses 1).

Metrics: the formulation's ``loss`` and loss by noise-level quartile (in latent space), and ``latent_scale``.
There is no likelihood: the DDPM bound of the latents is not one of the images.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from genlit.checkpoints import allowed_global, read_checkpoint
from genlit.diffusion.edm import EDMSchedule
from genlit.diffusion.samplers import Sampler
from genlit.diffusion.schedules import NoiseSchedule
from genlit.diffusion.targets import PredictionTarget
from genlit.families.autoencoder import KLAutoencoder
from genlit.families.base import NonFinitePolicy, ShapeNetFactory
from genlit.families.denoising import DenoisingFamily
from genlit.families.diffusion import Diffusion
from genlit.families.edm import EDM

FIX = (
    "pass --model.init_args.autoencoder with the last.ckpt of "
    "`genlit fit --config experiments/diffusion/autoencoder_mnist.yaml`"
)


class LatentSpace:
    """Mixin before a :class:`~genlit.families.denoising.DenoisingFamily` formulation: the process runs on a frozen
    autoencoder's scaled latents (module docstring). A subclass calls :meth:`_first_stage` before the
    formulation's ``__init__`` and :meth:`_attach_first_stage` after it."""

    autoencoder: KLAutoencoder
    nll = None  # no likelihood of the images (not a genlit.families.protocols.Likelihood)

    def _first_stage(self, autoencoder: str | None, first_stage: dict | None, data_shape) -> tuple:
        """The autoencoder (rebuilt from ``first_stage``, or loaded from the checkpoint ``autoencoder``) and the
        spec that rebuilds it; its latent shape is noted for the formulation's net (built before the module can
        hold it)."""
        if first_stage is not None:
            stage, spec = build_first_stage(first_stage), first_stage
        elif autoencoder is None:
            raise ValueError(f"{type(self).__name__} needs its first-stage autoencoder; {FIX}")
        else:
            stage, spec = load_first_stage(autoencoder)
        if tuple(stage.data_shape) != tuple(data_shape):
            raise ValueError(
                f"autoencoder {spec.get('source', autoencoder)} was trained on images of shape "
                f"{tuple(stage.data_shape)}, but the data here has shape {tuple(data_shape)}; train an autoencoder on "
                "this data (genlit fit --config experiments/diffusion/autoencoder_mnist.yaml) and pass its checkpoint"
            )
        self._latent = tuple(stage.latent_shape)
        return stage, spec

    def _attach_first_stage(self, stage: KLAutoencoder, spec: dict) -> None:
        """Hold the autoencoder frozen, record its spec as the hyperparameter ``first_stage``, add the scale."""
        self.autoencoder = stage.requires_grad_(False)
        self.hparams["first_stage"] = spec
        self.register_buffer("latent_scale", torch.zeros(()))  # 0: not measured yet

    # ------------------------------------------------------------------------------- the modelled space
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent grid of the autoencoder (latent_channels, h, w)."""
        return self._latent

    @property
    def scale(self) -> Tensor:
        """The latent scale: measured at the start of training, 1 before."""
        return torch.where(self.latent_scale > 0, self.latent_scale, torch.ones_like(self.latent_scale))

    @torch.no_grad()
    def encode_data(self, x: Tensor) -> Tensor:
        """Scaled latents (B, *latent_shape) of images x (B, *data_shape): scale * the posterior mean."""
        return self.autoencoder.encode(x) * self.scale

    @torch.no_grad()
    def decode_latents(self, z: Tensor) -> Tensor:
        """Images (B, *data_shape) in [-1, 1] of scaled latents z (B, *latent_shape)."""
        return self.autoencoder.decode(z / self.scale)

    @torch.no_grad()
    def measure_scale(self, x: Tensor) -> float:
        """Set ``latent_scale`` to 1 / std of the latents of images x (B, *data_shape), gathered over all ranks."""
        z = self.autoencoder.encode(x).float()
        if self._trainer is not None:
            z = self.all_gather(z)
        self.latent_scale.fill_(1.0 / z.std().clamp_min(1e-8).item())
        return float(self.latent_scale)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Measure the latent scale on the first training batch of a run that has none (not on a resume)."""
        if float(self.latent_scale) == 0:
            scale = self.measure_scale(batch[0])
            rank_zero_info(f"latent scale: {scale:.4g} (1 / std of the first batch's latents)")
        self.log("train/latent_scale", self.latent_scale.float(), on_step=True, on_epoch=False)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/loss`` of the EMA net in latent space (no likelihood bound)."""
        DenoisingFamily.test_step(self, batch, batch_idx)


class LatentDiffusion(LatentSpace, Diffusion):
    """DDPM diffusion on a frozen autoencoder's scaled latents (module docstring). The arguments not listed are
    :class:`~genlit.families.diffusion.Diffusion`'s; ``data_shape`` is the images' (linked from the DataModule).

    Args:
        net: factory called as ``net(latent_shape, num_classes)``: the denoiser of the latents.
        autoencoder: checkpoint of a :class:`~genlit.families.autoencoder.KLAutoencoder` (``genlit fit`` of
            ``experiments/diffusion/autoencoder_mnist.yaml``); its data shape must be the data's.
        first_stage: what rebuilds the autoencoder without its file; written by the model into its checkpoint,
            leave it unset.
        clip_x0: clamp the x_0 estimate to [-1, 1] while sampling (default off: latents are not in [-1, 1]).
    """

    def __init__(
        self,
        net: ShapeNetFactory,
        autoencoder: str | None = None,
        first_stage: dict | None = None,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        schedule: NoiseSchedule | None = None,
        sampler: Sampler | None = None,
        prediction: PredictionTarget = "eps",
        min_snr_gamma: float | None = None,
        conditional: bool = False,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        clip_x0: bool = False,
        ema_decay: float = 0.9999,
        nll_timesteps: int | None = 50,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        stage, spec = self._first_stage(autoencoder, first_stage, data_shape)
        super().__init__(net, data_shape, num_classes, schedule, sampler, prediction, min_snr_gamma, conditional,
                         label_dropout, guidance_scale, clip_x0, ema_decay, nll_timesteps, optimizer, lr_scheduler,
                         on_nonfinite)  # fmt: skip
        self.save_hyperparameters()
        self._attach_first_stage(stage, spec)


class LatentEDM(LatentSpace, EDM):
    """EDM on a frozen autoencoder's scaled latents (module docstring); give the schedule ``sigma_data: 1.0``,
    the scaled latents' standard deviation. The arguments not listed are :class:`~genlit.families.edm.EDM`'s.

    Args:
        net: factory called as ``net(latent_shape, num_classes)``: the network F of the latents.
        autoencoder: checkpoint of a :class:`~genlit.families.autoencoder.KLAutoencoder`, as
            :class:`LatentDiffusion`'s.
        first_stage: what rebuilds the autoencoder without its file; leave it unset.
    """

    def __init__(
        self,
        net: ShapeNetFactory,
        autoencoder: str | None = None,
        first_stage: dict | None = None,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        schedule: EDMSchedule | None = None,
        sampler: Sampler | None = None,
        conditional: bool = False,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        ema_decay: float = 0.9999,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        stage, spec = self._first_stage(autoencoder, first_stage, data_shape)
        super().__init__(net, data_shape, num_classes, schedule, sampler, conditional, label_dropout, guidance_scale,
                         ema_decay, optimizer, lr_scheduler, on_nonfinite)  # fmt: skip
        self.save_hyperparameters()
        self._attach_first_stage(stage, spec)


# ---------------------------------------------------------------------------------------------- the first stage
def load_first_stage(path: str | Path) -> tuple[KLAutoencoder, dict]:
    """The autoencoder of checkpoint ``path`` (without its discriminator) and the spec that rebuilds it
    (:func:`build_first_stage`); one clear error for a missing file or a checkpoint of anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder {path} does not exist; {FIX}")
    checkpoint = read_checkpoint(path, mmap=True)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    instantiator = hparams.pop("_instantiator", None)  # LightningCLI's: the nets are configs, not Python objects
    if _autoencoder_class(class_path) is None:
        held = class_path.rpartition(".")[2] if class_path else "no model class genlit fit records"
        raise ValueError(f"autoencoder {path} is not a KLAutoencoder checkpoint (it holds {held}); {FIX}")
    spec = {
        "class_path": class_path,
        "hyper_parameters": {**hparams, "discriminator": None},
        "instantiator": instantiator is not None,
        "source": str(path),
    }
    stage = build_first_stage(spec)
    weights = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("discriminator.")}
    stage.load_state_dict(weights)
    return stage, spec


def build_first_stage(spec: dict) -> KLAutoencoder:
    """A :class:`~genlit.families.autoencoder.KLAutoencoder` (untrained weights) from the spec a latent model keeps
    in its hyperparameter ``first_stage``: its class path and hyperparameters, as ``load_from_checkpoint`` rebuilds
    it."""
    family = _autoencoder_class(spec.get("class_path"))
    if family is None or not isinstance(spec.get("hyper_parameters"), dict):
        raise ValueError(f"first_stage names no KLAutoencoder ({spec.get('class_path')}); leave first_stage unset "
                         f"and {FIX}")  # fmt: skip
    hparams = spec["hyper_parameters"]
    if spec.get("instantiator"):
        from lightning.pytorch.cli import instantiate_module

        return instantiate_module(family, {"_class_path": spec["class_path"], **hparams})
    return family(**hparams)


def _autoencoder_class(class_path) -> type[KLAutoencoder] | None:
    if not isinstance(class_path, str) or not class_path.startswith("genlit.") or not allowed_global(class_path):
        return None
    module, _, name = class_path.rpartition(".")
    family = getattr(importlib.import_module(module), name)
    return family if issubclass(family, KLAutoencoder) else None
