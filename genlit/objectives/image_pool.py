"""A history of generated images for the discriminator (Shrivastava et al. 2017, https://arxiv.org/abs/1612.07828,
section 2.3), as CycleGAN uses it (Zhu et al. 2017, https://arxiv.org/abs/1703.10593, section 4).

The discriminator is shown fakes from the generator's past as well as its present, which damps the oscillation of
the two players. :meth:`ImagePool.query` takes a batch of fresh fakes and returns a batch of the same size, image
by image: while the pool holds fewer than ``capacity`` images, the fresh image is stored and returned; once it is
full, with probability 1/2 a stored image (chosen uniformly) is returned and the fresh one takes its place, else the
fresh image is returned and the pool is left as it is. ``capacity`` 0 returns the fresh batch (no history).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """The history buffer of generated images (module docstring). Its state (:meth:`state_dict`) is a tensor of the
    stored images, so a family can put it in its checkpoints and resume with the same history.

    Args:
        capacity: how many images the pool keeps (CycleGAN: 50); 0 disables it.
        generator: CPU ``torch.Generator`` for the choices; None: torch's global generator.
    """

    def __init__(self, capacity: int = 50, generator: torch.Generator | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"the image pool capacity must be >= 0 (0: no history), got {capacity}")
        self.capacity, self.generator = capacity, generator
        self.images: Tensor | None = None  # (capacity, C, H, W), allocated on the first query
        self.count = 0  # images stored so far (<= capacity)

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def query(self, fresh: Tensor) -> Tensor:
        """Images for the discriminator (B, C, H, W), one per fresh fake (B, C, H, W): stored, swapped or passed
        through as the module docstring says. The result is detached; the pool keeps copies."""
        fresh = fresh.detach()
        if self.capacity == 0:
            return fresh
        if self.images is None:
            self.images = fresh.new_empty((self.capacity, *fresh.shape[1:]))  # (capacity, C, H, W)
        if self.images.device != fresh.device:  # taken back from a checkpoint on the CPU
            self.images = self.images.to(fresh.device)
        if self.images.shape[1:] != fresh.shape[1:]:
            raise ValueError(f"the pool holds images {tuple(self.images.shape[1:])}, got {tuple(fresh.shape[1:])}")
        out = fresh.clone()  # (B, C, H, W)
        for i in range(fresh.shape[0]):
            if self.count < self.capacity:
                self.images[self.count] = fresh[i]
                self.count += 1
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                slot = int(torch.randint(self.capacity, (), generator=self.generator))
                out[i] = self.images[slot]
                self.images[slot] = fresh[i]
        return out

    def state_dict(self) -> dict:
        """The stored images (count, C, H, W) on the CPU (None before the first query) and the capacity."""
        stored = None if self.images is None else self.images[: self.count].cpu().clone()
        return {"capacity": self.capacity, "images": stored}

    def load_state_dict(self, state: dict) -> None:
        """Take back a :meth:`state_dict` (of a pool of the same capacity)."""
        if state["capacity"] != self.capacity:
            raise ValueError(f"the checkpoint's image pool holds {state['capacity']} images, this one {self.capacity}")
        stored = state["images"]
        self.images, self.count = None, 0
        if stored is not None and self.capacity > 0:
            self.images = stored.new_empty((self.capacity, *stored.shape[1:]))  # (capacity, C, H, W)
            self.images[: len(stored)] = stored
            self.count = len(stored)
