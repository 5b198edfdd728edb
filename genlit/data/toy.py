"""2-D Gaussian-mixture benchmarks for mode collapse: a ring of 8 and a 5x5 grid of 25 Gaussians.

Layouts and standard deviations (all modes equally likely, isotropic covariance ``std**2 * I``):

* ``ring8``: 8 modes at angles ``2*pi*k/8`` (k = 0..7) on a circle of radius 2, std 0.02, as in the
  Unrolled GAN paper (Metz et al. 2017, https://arxiv.org/abs/1611.02163, appendix A). PacGAN's
  code (https://github.com/fjxmlzn/PacGAN, ``synthetic_data_experiments/2DRing_GAN&PacGAN/config.py``),
  which follows VEEGAN (https://arxiv.org/abs/1705.07761), uses radius 1 and std 0.01: the same ring
  scaled by 1/2. The evaluation below measures distances in units of ``std``, so both give the same
  numbers; radius 2 puts the ring on the same scale as the grid.
* ``grid25``: 25 modes at ``{-4, -2, 0, 2, 4}^2``, std 0.05, as in VEEGAN's 2-D notebook and PacGAN's
  ``2DGrid_GAN&PacGAN/config.py``. Mode index ``5*i + j`` sits at ``(-4 + 2i, -4 + 2j)``.

PacGAN trains on 100,000 points and evaluates 2,500 generated samples; those are the defaults of
``num_train`` and ``num_val`` here. The evaluation itself (modes covered, high-quality samples) lives in
:mod:`genlit.metrics.toy`.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from genlit.data.tensors import TensorPairs, tensor_loader

ToyName = Literal["ring8", "grid25"]

_RING_RADIUS = 2.0
_GRID_COORDS = (-4.0, -2.0, 0.0, 2.0, 4.0)
# Default per-axis standard deviation of every mode (see the module docstring for the sources).
DEFAULT_STD: dict[str, float] = {"ring8": 0.02, "grid25": 0.05}


def toy_centers(name: ToyName) -> Tensor:
    """Return the mode centres of a toy mixture as a float32 tensor of shape (K, 2).

    ``ring8``: ``(2 cos(2 pi k / 8), 2 sin(2 pi k / 8))`` for k = 0..7.
    ``grid25``: ``(x_i, y_j)`` with ``x, y`` in ``{-4, -2, 0, 2, 4}``, mode index ``5 * i + j``.
    """
    _check_name(name)
    if name == "ring8":
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8  # (8,)
        centers = _RING_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)  # (8, 2)
    else:
        coords = torch.tensor(_GRID_COORDS, dtype=torch.float64)  # (5,)
        gx, gy = torch.meshgrid(coords, coords, indexing="ij")  # (5, 5) each
        centers = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (25, 2)
    return centers.float()


def sample_toy_mixture(
    num: int, centers: Tensor, std: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw ``num`` points from the uniform mixture of isotropic Gaussians at ``centers`` (K, 2).

    Returns ``(x, y)``: x float32 (num, 2), y int64 (num,) with the index of the mode each point came from.
    """
    labels = torch.randint(len(centers), (num,), generator=generator)  # (num,)
    noise = torch.randn(num, centers.shape[1], generator=generator)  # (num, 2)
    x = centers[labels] + std * noise  # (num, 2)
    return x.float(), labels


def _check_name(name: str) -> None:
    allowed = get_args(ToyName)
    if name not in allowed:
        raise ValueError(f"toy dataset name {name!r} is not known; use one of {', '.join(allowed)}")


class ToyDataModule(L.LightningDataModule):
    """Ring-of-8 / grid-of-25 Gaussian mixtures in 2-D, the standard mode-collapse benchmarks.

    Yields ``(x, y)`` with x float32 (B, 2) and y int64 (B,) the mode index (a valid class label for
    conditional models, so ``num_classes`` is the number of modes). The points are drawn in ``setup``
    from ``seed`` alone, so every DDP rank holds the same data and Lightning's ``DistributedSampler``
    splits it; the train, validation and test sets come from independent streams, so changing
    ``num_train`` leaves the validation set as it was.

    Args:
        name: ``"ring8"`` or ``"grid25"`` (layouts and sources in the module docstring).
        batch_size: batch size of every dataloader.
        num_train: training points (PacGAN: 100,000).
        num_val: validation points, and test points (PacGAN evaluates 2,500 samples).
        std: per-axis standard deviation of every mode; ``None`` takes the paper default
            (0.02 for ``ring8``, 0.05 for ``grid25``).
        seed: seed of the data draw.
    """

    def __init__(
        self,
        name: ToyName = "ring8",
        batch_size: int = 256,
        num_train: int = 100_000,
        num_val: int = 2_500,
        std: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_name(name)
        if std is not None and not std > 0:
            raise ValueError(f"std must be positive, got {std}; leave it None for the paper default")
        if batch_size < 1 or num_train < batch_size:
            raise ValueError(f"need 1 <= batch_size <= num_train, got batch_size {batch_size}, num_train {num_train}")
        if num_val < 1:
            raise ValueError(f"num_val must be at least 1, got {num_val}")
        self.save_hyperparameters()
        self.name = name
        self.batch_size = batch_size
        self.num_train = num_train
        self.num_val = num_val
        self.seed = seed
        self.std: float = float(std) if std is not None else DEFAULT_STD[name]
        self._centers = toy_centers(name)  # (K, 2)
        self.data_shape: tuple[int, ...] = (2,)
        self.num_classes: int = len(self._centers)
        self._splits: dict[str, TensorPairs] = {}

    @property
    def centers(self) -> Tensor:
        """Mode centres, float32 (K, 2); row k is the mean of mode (label) k."""
        return self._centers

    def setup(self, stage: str | None = None) -> None:
        """Draw the train/val/test points (once; later calls reuse them)."""
        if self._splits:
            return
        root = torch.Generator().manual_seed(self.seed)
        split_seeds = torch.randint(2**62, (3,), generator=root).tolist()
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_val}
        for (split, size), split_seed in zip(sizes.items(), split_seeds, strict=True):
            gen = torch.Generator().manual_seed(split_seed)
            x, y = sample_toy_mixture(size, self._centers, self.std, generator=gen)  # (N, 2), (N,)
            self._splits[split] = TensorPairs(x, y)

    def _dataset(self, split: str) -> TensorPairs:
        if not self._splits:
            raise RuntimeError("ToyDataModule.setup() has not run yet; call dm.setup() or let the Trainer do it")
        return self._splits[split]

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last incomplete batch is dropped."""
        return tensor_loader(self._dataset("train"), self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return tensor_loader(self._dataset("val"), self.batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return tensor_loader(self._dataset("test"), self.batch_size, train=False)
