"""Latent inspection of VAE-like modules: reconstructions, interpolations and single-dimension traversals.

Pure functions (:func:`lerp`, :func:`slerp`, :func:`traversal`) build latent paths; the callbacks
(:class:`ReconstructionGrid`, :class:`LatentInterpolation`, :class:`LatentTraversal`) decode them on a
fixed set of validation images and save ``<run_dir>/latents/<name>_step_{global_step:07d}.png``, also sent
to the configured loggers (:func:`~genlit.callbacks.loggers.log_picture`). Prior samples are drawn by
:class:`~genlit.callbacks.sample_grid.SampleGrid`. The module is a generative family of images with the
:class:`~genlit.families.protocols.LatentVariable` capability (``encode(x, labels) -> (mu, logvar)``,
``decode(z, labels)`` to images in [-1, 1], ``reconstruct``, ``latent_dim``), as :class:`genlit.families.vae.VAE`;
:class:`ReconstructionGrid` needs only ``reconstruct`` (also a VQ-VAE's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

from genlit.callbacks.loggers import log_picture
from genlit.callbacks.sample_grid import PeriodicPicture
from genlit.families.protocols import DataShaped, Generative, LatentVariable, Reconstructs
from genlit.imaging import image_grid, save_png, to_uint8


def _fractions(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """Check two latent vectors (Z,) and return ``steps`` fractions t from 0 to 1 as (steps, 1)."""
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError(f"expected two latent vectors of one shape (Z,); got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both endpoints are included); got {steps}")
    return torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]  # (steps, 1)


def lerp(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1`` at ``steps`` evenly spaced t in [0, 1]: (steps, Z)."""
    t = _fractions(z0, z1, steps)  # (steps, 1)
    return (1 - t) * z0 + t * z1  # (steps, Z)


def slerp(z0: Tensor, z1: Tensor, steps: int, eps: float = 1e-4) -> Tensor:
    """Spherical linear interpolation from z0 to z1 at ``steps`` evenly spaced t in [0, 1]: (steps, Z).

    ``(sin((1 - t) w) z0 + sin(t w) z1) / sin(w)`` with w the angle between z0 and z1 (Shoemake 1985;
    White 2016, https://arxiv.org/abs/1609.04468): the path follows the great circle, so equal-norm
    endpoints keep their norm instead of passing near the origin, where Gaussian latents rarely lie.
    w is computed as ``2 atan2(|u0 - u1|, |u0 + u1|)`` of the unit vectors (accurate near 0 and pi, unlike
    ``arccos``). Nearly parallel or antiparallel vectors (``sin(w) <= eps``) and zero vectors fall back to
    :func:`lerp`, where the great circle is ill-defined or no different from the line.
    """
    t = _fractions(z0, z1, steps)  # (steps, 1)
    n0, n1 = z0.norm(), z1.norm()
    u0, u1 = z0 / n0.clamp_min(eps), z1 / n1.clamp_min(eps)  # (Z,) each
    omega = 2 * torch.atan2((u0 - u1).norm(), (u0 + u1).norm())
    sin_omega = torch.sin(omega)
    path = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / sin_omega.clamp_min(eps)  # (steps, Z)
    spherical = (sin_omega > eps) & (n0 > eps) & (n1 > eps)
    return torch.where(spherical, path, (1 - t) * z0 + t * z1)  # (steps, Z)


def traversal(z: Tensor, dims: Sequence[int], values: Sequence[float] | Tensor, relative: bool = False) -> Tensor:
    """Copies of z (Z,) with one dimension changed at a time: (len(dims) * len(values), Z).

    Row ``i * len(values) + j`` is z with dimension ``dims[i]`` set to ``values[j]`` (``relative``: shifted
    by ``values[j]``), so a grid with ``len(values)`` images per row shows one dimension per row.
    """
    if z.ndim != 1:
        raise ValueError(f"traversal expects one latent vector (Z,); got shape {tuple(z.shape)}")
    dims = [int(d) for d in dims]
    if not dims or any(not 0 <= d < z.shape[0] for d in dims):
        raise ValueError(f"dims must be a non-empty list of indices in [0, {z.shape[0]}); got {dims}")
    vals = torch.as_tensor(values, dtype=z.dtype, device=z.device).flatten()  # (V,)
    if vals.numel() == 0:
        raise ValueError("values must not be empty")
    index = torch.as_tensor(dims, device=z.device)  # (D,)
    out = z.expand(len(dims), vals.numel(), z.shape[0]).clone()  # (D, V, Z)
    new = vals[None, :] + (z[index][:, None] if relative else 0)  # (D, V)
    rows = torch.arange(len(dims), device=z.device)[:, None]  # (D, 1)
    out[rows, torch.arange(vals.numel(), device=z.device)[None, :], index[:, None]] = new
    return out.reshape(-1, z.shape[0])  # (D * V, Z)


class _LatentPicture(PeriodicPicture):
    """Shared machinery: fixed validation images, the step trigger, eval/no-grad drawing, saving and logging.

    The first validation batches seen (sanity check included; ``on_validation_batch_start`` sees them after
    ``on_after_batch_transfer``, so in model space on the device) are kept until ``_num_needed`` images are
    collected. If no validation ran before training starts, they are read from
    ``trainer.datamodule.val_dataloader()`` and moved with ``trainer.strategy.batch_to_device`` (which runs
    ``on_after_batch_transfer``, training-time augmentation included). Subclasses set ``name``/``key`` and
    implement ``_picture_images(pl_module, x, y) -> (images (N, C, H, W), images per row)``.
    """

    name, key = "latent", "latents"
    needs: type = LatentVariable  # the capability the picture uses (ReconstructionGrid: Reconstructs only)
    needs_words = (
        "a VAE-like generative family of images (encode, decode, reconstruct, latent_dim; data_shape (C, H, W))"
    )

    def __init__(self, every_n_steps: int) -> None:
        super().__init__(every_n_steps)
        self._x: Tensor | None = None  # (N, C, H, W) fixed images in model space
        self._y: Tensor | None = None  # (N,) their labels
        self._frozen = False  # True once the images are fixed

    def _num_needed(self) -> int:
        return 1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check before fitting that the module has the latent methods and image data (C, H, W)."""
        if stage != "fit":
            return
        capable = all(isinstance(pl_module, p) for p in (Generative, self.needs, DataShaped))
        if not capable or len(pl_module.data_shape) != 3:
            raise ValueError(f"{type(self).__name__} needs {self.needs_words}; got {type(pl_module).__name__}")

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Keep the first validation images (rank zero) until enough are collected."""
        if trainer.is_global_zero and dataloader_idx == 0:
            self._collect(batch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fix the images after the first validation run, so every picture shows the same ones."""
        self._frozen = self._frozen or self._x is not None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve the run folder and count steps (all ranks); fetch the fixed images if none were seen."""
        super().on_train_start(trainer, pl_module)
        datamodule = trainer.datamodule
        if trainer.is_global_zero and self._x is None and self._num_needed() > 0 and datamodule is not None:
            if is_overridden("val_dataloader", datamodule):
                for batch in datamodule.val_dataloader():
                    if self._collect(trainer.strategy.batch_to_device(batch, dataloader_idx=0)):
                        break
                self._frozen = self._x is not None

    def _collect(self, batch: Any) -> bool:
        """Append a batch's images (and labels) until ``_num_needed``; return True once there are enough."""
        needed = self._num_needed()
        have = 0 if self._x is None else self._x.shape[0]
        if self._frozen or have >= needed:
            return have >= needed
        x, y = batch[0][: needed - have], batch[1][: needed - have]  # (b, C, H, W), (b,)
        self._x = x.detach().clone() if self._x is None else torch.cat([self._x, x.detach()])
        self._y = y.detach().clone() if self._y is None else torch.cat([self._y, y.detach()])
        return self._x.shape[0] >= needed

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Make the picture in eval mode without gradients, restore the modes, save the PNG and log it."""
        if not trainer.is_global_zero:
            return
        if self._num_needed() > 0 and self._x is None:
            raise ValueError(
                f"{type(self).__name__} needs validation images: give the DataModule a val_dataloader "
                "(or pass val_dataloaders to fit and keep num_sanity_val_steps > 0)"
            )
        x = None if self._x is None else self._x.to(pl_module.device)  # (N, C, H, W)
        y = None if self._y is None else self._y.to(pl_module.device)  # (N,)
        with pl_module.eval_mode(), pl_module.ema_weights(), torch.no_grad():
            images, nrow = self._picture_images(pl_module, x, y)  # (M, C, H, W)
        picture = image_grid(to_uint8(images), nrow=nrow)
        run_dir = self._run_dir or Path(trainer.default_root_dir)
        path = run_dir / "latents" / f"{self.name}_step_{trainer.global_step:07d}.png"
        self.saved.append(save_png(picture, path))
        log_picture(trainer, self.key, picture)

    def _picture_images(self, pl_module: pl.LightningModule, x: Tensor | None, y: Tensor | None) -> tuple:
        raise NotImplementedError

    @staticmethod
    def _labels(pl_module: Generative, y: Tensor | None) -> Tensor | None:
        """The labels to pass: ``y`` for conditional modules, else None."""
        return y if pl_module.conditional else None


class ReconstructionGrid(_LatentPicture):
    """Save and log ``latents/reconstruction_step_*.png``: each fixed validation image beside its reconstruction.

    Uses ``pl_module.reconstruct(x, labels)`` (labels only for conditional modules), so any family that
    :class:`~genlit.families.protocols.Reconstructs` (a VAE, a VQ-VAE) draws it. Pairs are laid out
    ``ceil(sqrt(num_images / 2))`` per row (input, reconstruction, input, ...), a roughly square picture.
    Fires when ``global_step`` crosses a multiple of ``every_n_steps`` and when training ends (rank zero).
    """

    name, key = "reconstruction", "reconstructions"
    needs = Reconstructs
    needs_words = "a generative family of images that reconstructs them (reconstruct; data_shape (C, H, W))"

    def __init__(self, num_images: int = 32, every_n_steps: int = 1000) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1; got {num_images}")
        super().__init__(every_n_steps)
        self.num_images = num_images

    def _num_needed(self) -> int:
        return self.num_images

    def _picture_images(self, pl_module, x, y):
        recon = pl_module.reconstruct(x, self._labels(pl_module, y))  # (N, C, H, W)
        pairs = torch.stack([x, recon.to(x.dtype)], dim=1).flatten(0, 1)  # (2N, C, H, W): x0, r0, x1, r1, ...
        return pairs, 2 * math.ceil(math.sqrt(x.shape[0] / 2))


class LatentInterpolation(_LatentPicture):
    """Save and log ``latents/interpolation_step_*.png``: decoded paths between encoded validation images.

    Images 2p and 2p+1 of the fixed set are encoded to their posterior means; the linear (:func:`lerp`) and
    the spherical (:func:`slerp`) paths of ``steps`` points are decoded, one row each (rows alternate:
    linear, spherical; pairs follow each other). Conditional modules decode the whole path with the first
    image's label. Fires like :class:`ReconstructionGrid`.
    """

    name, key = "interpolation", "interpolations"

    def __init__(self, num_pairs: int = 4, steps: int = 10, every_n_steps: int = 1000) -> None:
        if num_pairs < 1 or steps < 2:
            raise ValueError(f"num_pairs must be >= 1 and steps >= 2; got {num_pairs} and {steps}")
        super().__init__(every_n_steps)
        self.num_pairs, self.steps = num_pairs, steps

    def _num_needed(self) -> int:
        return 2 * self.num_pairs

    def _picture_images(self, pl_module, x, y):
        pairs = x.shape[0] // 2
        if pairs < 1:
            raise ValueError("LatentInterpolation needs at least 2 validation images")
        mu = pl_module.encode(x[: 2 * pairs], self._labels(pl_module, y[: 2 * pairs]))[0]  # (2P, Z)
        paths = [f(mu[2 * p], mu[2 * p + 1], self.steps) for p in range(pairs) for f in (lerp, slerp)]
        z = torch.cat(paths)  # (2P * steps, Z)
        labels = y[0 : 2 * pairs : 2].repeat_interleave(2 * self.steps)  # (2P * steps,)
        return pl_module.decode(z, self._labels(pl_module, labels)), self.steps


class LatentTraversal(_LatentPicture):
    """Save and log ``latents/traversal_step_*.png``: one latent dimension varied at a time, one row each.

    Around the posterior mean of the first fixed validation image (or z = 0 with ``from_prior``), each of
    the first ``dims`` latent dimensions (or the listed indices) is set to each of ``values`` (shifted by
    them with ``relative``) and decoded (Higgins et al. 2017, https://openreview.net/forum?id=Sy2fzU9gl).
    Conditional modules use that image's label. Requested dimensions beyond the module's ``latent_dim`` are
    an error at setup. Fires like :class:`ReconstructionGrid`.
    """

    name, key = "traversal", "traversals"

    def __init__(
        self,
        dims: int | list[int] = 8,
        values: Sequence[float] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
        every_n_steps: int = 1000,
        from_prior: bool = False,
        relative: bool = False,
    ) -> None:
        self.dims = list(range(dims)) if isinstance(dims, int) else [int(d) for d in dims]
        if not self.dims or min(self.dims) < 0 or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must be a count >= 1 or a list of distinct indices >= 0; got {dims}")
        if len(values) == 0:
            raise ValueError("values must not be empty")
        super().__init__(every_n_steps)
        self.values, self.from_prior, self.relative = [float(v) for v in values], from_prior, relative
        self._conditional, self._latent_dim = False, None

    def _num_needed(self) -> int:
        return 0 if self.from_prior and not self._conditional else 1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the module (see the base class) and that the requested dimensions exist."""
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._conditional = pl_module.conditional
        latent_dim = self._latent_dim = int(pl_module.latent_dim)
        if max(self.dims) >= latent_dim:
            raise ValueError(
                f"LatentTraversal dims {self.dims} exceed latent_dim {latent_dim}; use indices below {latent_dim}"
            )

    def _picture_images(self, pl_module, x, y):
        labels = None if x is None else self._labels(pl_module, y[:1])  # (1,)
        if self.from_prior:
            z = torch.zeros(int(self._latent_dim), device=pl_module.device)  # (Z,)
        else:
            z = pl_module.encode(x[:1], labels)[0][0]  # (Z,)
        path = traversal(z, self.dims, self.values, relative=self.relative)  # (D * V, Z)
        labels = None if labels is None else labels.expand(path.shape[0])  # (D * V,)
        return pl_module.decode(path, labels), len(self.values)
