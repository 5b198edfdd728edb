"""Tests for the latent tools: interpolation/traversal math and the callbacks on tiny real Lightning runs."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlit.callbacks.latent_tools import (
    LatentInterpolation,
    LatentTraversal,
    ReconstructionGrid,
    lerp,
    slerp,
    traversal,
)
from genlit.families.base import GenerativeFamily
from genlit.imaging import to_uint8

SHAPE, LATENT = (1, 8, 8), 4


class TinyVAE(GenerativeFamily):
    """A linear VAE-like module on 1x8x8 images with the latent interface; records calls made outside steps."""

    latent_dim = LATENT

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__(num_classes, conditional=num_classes > 0)
        self.data_shape = SHAPE
        self.encoder, self.decoder = nn.Linear(64, 2 * LATENT), nn.Linear(LATENT, 64)
        self.in_step, self.calls, self.step_modes = False, [], []

    def encode(self, x, labels=None):
        self._record("encode", x, labels)
        return self.encoder(x.flatten(1)).chunk(2, dim=1)  # (B, Z) each

    def decode(self, z, labels=None):
        self._record("decode", z, labels)
        return torch.tanh(self.decoder(z)).view(-1, *SHAPE)  # (B, 1, 8, 8)

    def reconstruct(self, x, labels=None):
        return self.decode(self.encode(x, labels)[0], labels)

    def draw(self, num, labels, rng):
        return self.decode(rng.randn(LATENT), labels)

    def _record(self, name, tensor, labels):
        if not self.in_step:
            grad, mode = torch.is_grad_enabled(), self.training
            self.calls.append({"name": name, "input": tensor.clone(), "labels": labels, "grad": grad, "mode": mode})

    def _loss(self, x):
        self.in_step = True
        mu, logvar = self.encode(x)
        recon = self.decode(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
        self.in_step = False
        return (recon - x).pow(2).mean() + 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1).mean()

    def training_step(self, batch, batch_idx):
        self.step_modes.append(self.training and torch.is_grad_enabled())
        return self._loss(batch[0])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch[0]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TinyImages(pl.LightningDataModule):
    """Random images in [-1, 1] with labels; validation batches of 4."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(16, *SHAPE, generator=gen) * 2 - 1  # (16, 1, 8, 8)
        self.y = torch.arange(16) % num_classes  # (16,)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x.flip(0), self.y.flip(0)), batch_size=4)


def fit(tmp_path, module, callbacks, logger=None, max_steps=4, num_sanity_val_steps=2, datamodule=None):
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=logger if logger is not None else CSVLogger(tmp_path),
        callbacks=callbacks,
        num_sanity_val_steps=num_sanity_val_steps,
        limit_val_batches=2,
        val_check_interval=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    datamodule = datamodule or TinyImages()
    trainer.fit(module, datamodule=datamodule)
    return trainer, datamodule


def grid_size(num: int, nrow: int, side: int = 8, padding: int = 2) -> tuple[int, int]:
    """(width, height) of image_grid's picture of ``num`` images, ``nrow`` per row."""
    rows = math.ceil(num / nrow)
    return nrow * (side + padding) + padding, rows * (side + padding) + padding


def cell(picture: np.ndarray, row: int, col: int) -> np.ndarray:
    top, left = 2 + 10 * row, 2 + 10 * col
    return picture[top : top + 8, left : left + 8]  # (8, 8)


# ------------------------------------------------------------------------------------------ pure functions
def test_lerp_endpoints_and_midpoint():
    z0, z1 = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([3.0, 2.0, 4.0])
    path = lerp(z0, z1, 5)
    assert path.shape == (5, 3)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[2], torch.tensor([2.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="steps must be >= 2"):
        lerp(z0, z1, 1)


def test_slerp_endpoints_norm_and_closed_form():
    e0, e1 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    mid = slerp(e0, e1, 3)[1]
    assert torch.allclose(mid, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-6)  # sin(pi/4)/sin(pi/2)
    z0, z1 = torch.randn(2, 16, generator=torch.Generator().manual_seed(1)).unbind()
    z1 = z1 * z0.norm() / z1.norm()  # equal norms
    path = slerp(z0, z1, 9)
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), z0.norm().expand(9), rtol=1e-5)
    assert (lerp(z0, z1, 9)[4].norm() < z0.norm() - 1e-3).item()  # the linear path cuts inside the sphere


def test_slerp_falls_back_to_lerp_for_parallel_vectors():
    z0 = torch.tensor([1.0, 2.0, -1.0])
    for z1 in (3 * z0, -z0, torch.zeros(3), z0 + 1e-6):
        path = slerp(z0, z1, 4)
        assert torch.isfinite(path).all() and torch.allclose(path, lerp(z0, z1, 4))


def test_traversal_changes_one_dimension_per_row():
    z = torch.tensor([0.5, -1.0, 2.0, 0.0])
    values = [-1.0, 0.0, 1.0]
    out = traversal(z, [2, 0], values)
    assert out.shape == (6, 4)
    for row, (dim, value) in enumerate([(d, v) for d in (2, 0) for v in values]):
        expected = z.clone()
        expected[dim] = value
        assert torch.equal(out[row], expected)
    shifted = traversal(z, [1], values, relative=True)
    assert torch.equal(shifted[:, 1], torch.tensor([-2.0, -1.0, 0.0]))
    assert torch.equal(shifted[:, [0, 2, 3]], z[[0, 2, 3]].expand(3, 3))
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        traversal(z, [4], values)


# --------------------------------------------------------------------------------------------- callbacks
def test_callbacks_save_pictures_of_fixed_validation_images(tmp_path):
    module = TinyVAE()
    callbacks = [
        ReconstructionGrid(num_images=6, every_n_steps=2),
        LatentInterpolation(num_pairs=2, steps=5, every_n_steps=2),
        LatentTraversal(dims=3, every_n_steps=2),
    ]
    trainer, data = fit(tmp_path, module, callbacks)
    folder = tmp_path / "lightning_logs" / "version_0" / "latents"
    names = [f"{n}_step_{s:07d}.png" for n in ("interpolation", "reconstruction", "traversal") for s in (2, 4)]
    assert sorted(p.name for p in folder.iterdir()) == names  # step 4 is both a multiple and the end
    sizes = {"reconstruction": grid_size(12, 4), "interpolation": grid_size(20, 5), "traversal": grid_size(21, 7)}
    for name, size in sizes.items():
        with Image.open(folder / f"{name}_step_0000004.png") as img:
            assert img.mode == "L" and img.size == size
    assert all(not c["grad"] and not c["mode"] and c["labels"] is None for c in module.calls)  # eval, no grad
    assert all(module.step_modes)  # training mode restored after every picture
    # the fixed images are the first 6 validation images (two sanity-check batches), input beside output
    val_x = data.x.flip(0)[:6]  # (6, 1, 8, 8)
    picture = np.asarray(Image.open(folder / "reconstruction_step_0000004.png"))
    module.eval()
    with torch.no_grad():
        recon = to_uint8(module.reconstruct(val_x))[..., 0].numpy()  # (6, 8, 8)
        mu = module.encode(val_x)[0]  # (6, Z)
        ends = to_uint8(module.decode(mu[:2]))[..., 0].numpy()  # (2, 8, 8)
    inputs = to_uint8(val_x)[..., 0].numpy()
    for i in range(6):
        assert np.array_equal(cell(picture, i // 2, 2 * (i % 2)), inputs[i])
        assert np.array_equal(cell(picture, i // 2, 2 * (i % 2) + 1), recon[i])
    interpolation = np.asarray(Image.open(folder / "interpolation_step_0000004.png"))
    for row in (0, 1):  # linear and spherical paths share their endpoints: the decoded posterior means
        assert np.array_equal(cell(interpolation, row, 0), ends[0])
        assert np.array_equal(cell(interpolation, row, 4), ends[1])
    assert not np.array_equal(cell(interpolation, 0, 2), cell(interpolation, 1, 2))
    (last_traversal,) = [c for c in module.calls if c["name"] == "decode" and c["input"].shape[0] == 21][-1:]
    with torch.no_grad():
        mu0 = module.encode(val_x[:1])[0][0]  # (Z,) as the callback computes it (one image)
    changed = ~torch.isclose(last_traversal["input"], mu0).view(3, 7, LATENT)  # (dims, values, Z)
    assert torch.equal(changed.any(dim=1), torch.eye(3, LATENT, dtype=torch.bool))  # row i changes dim i only


def test_conditional_labels_tensorboard_and_datamodule_fallback(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = TinyVAE(num_classes=3)
    callbacks = [
        ReconstructionGrid(num_images=4, every_n_steps=100),
        LatentInterpolation(num_pairs=2, steps=3, every_n_steps=100),
        LatentTraversal(dims=[1, 3], values=[0.0, 1.0], every_n_steps=100, from_prior=True),
    ]
    # no sanity check: the images come from datamodule.val_dataloader() when training starts
    _, data = fit(tmp_path, module, callbacks, logger=TensorBoardLogger(tmp_path), num_sanity_val_steps=0)
    val_y = data.y.flip(0)  # labels of the validation images: 0, 2, 1, 0, ...
    decode_labels = [c["labels"].tolist() for c in module.calls if c["name"] == "decode"]
    assert decode_labels == [
        val_y[:4].tolist(),  # reconstructions
        [val_y[0].item()] * 6 + [val_y[2].item()] * 6,  # interpolations: the first image's label per pair
        [val_y[0].item()] * 4,  # traversal
    ]
    traversal_z = [c["input"] for c in module.calls if c["name"] == "decode"][-1]
    assert torch.equal(traversal_z, torch.tensor([[0.0] * 4, [0, 1.0, 0, 0], [0.0] * 4, [0, 0, 0, 1.0]]))
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0")).Reload()
    expected = {"reconstructions": grid_size(8, 4), "interpolations": grid_size(12, 3), "traversals": grid_size(4, 2)}
    for key, size in expected.items():
        (image,) = events.Images(key)
        assert (image.width, image.height) == size and image.step == 4


def test_errors_at_setup(tmp_path):
    class NoEncode(TinyVAE):
        encode = None

    with pytest.raises(ValueError, match="needs a VAE-like generative family.*got NoEncode"):
        fit(tmp_path, NoEncode(), [LatentInterpolation()])
    with pytest.raises(ValueError, match=r"dims \[0, 1, 2, 3, 4\] exceed latent_dim 4"):
        fit(tmp_path, TinyVAE(), [LatentTraversal(dims=5)])
    with pytest.raises(ValueError, match="num_pairs must be >= 1"):
        LatentInterpolation(num_pairs=0)


def test_real_vae_reconstruction_grid(tmp_path):
    pytest.importorskip("genlit.nets.mlp_vae")
    from functools import partial

    from genlit.families.vae import VAE
    from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder

    module = VAE(
        partial(MLPEncoder, hidden=8), partial(MLPDecoder, hidden=8), data_shape=SHAPE, latent_dim=3, iw_samples=2
    )
    callbacks = [ReconstructionGrid(num_images=4, every_n_steps=2), LatentTraversal(dims=3, values=[-1, 1])]
    fit(tmp_path, module, callbacks, max_steps=2)
    folder = tmp_path / "lightning_logs" / "version_0" / "latents"
    with Image.open(folder / "reconstruction_step_0000002.png") as img:
        assert img.size == grid_size(8, 4)
    with Image.open(folder / "traversal_step_0000002.png") as img:
        assert img.size == grid_size(6, 2)
