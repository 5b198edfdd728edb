"""VQ-VAE networks: a convolutional encoder and decoder with residual blocks, and a vector quantizer whose
codebook is an exponential moving average of the encoder outputs assigned to each code.

Van den Oord et al. 2017, "Neural Discrete Representation Learning", https://arxiv.org/abs/1711.00937: the
encoder maps an image to a grid of vectors z_e, each replaced by its nearest codebook vector (its code), and the
decoder maps the grid of codes back to an image. The nets follow the paper's image model (and Sonnet's example):
stride-2 4x4 convolutions, a 3x3 convolution, residual blocks ``x + conv1x1(relu(conv3x3(relu(x))))``, and the
mirror image with transposed convolutions; ``downsamples`` stride-2 steps make a 28x28 image a 7x7 grid (2 steps).

The factories take ``(data_shape, embedding_dim)`` (encoder, decoder) and ``(embedding_dim)`` (quantizer): the
family owns ``embedding_dim`` and passes it to all three, so they always agree.

:class:`VectorQuantizer` is the paper's appendix A.1 EMA codebook: per code i, the assignment count N_i and the
sum m_i of the vectors assigned to it are exponential moving averages (``decay``), the count Laplace-smoothed, and
the code is their ratio e_i = m_i / N_i. Codes that no vector chose for ``restart_after`` training steps are
restarted at encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox, https://arxiv.org/abs/2005.00341),
picked with probability proportional to their squared distance to their code (k-means++'s rule: Lancucki et al.
2020, https://arxiv.org/abs/2005.08520), so a restart lands where the codebook fits the data worst. Under
``torch.distributed`` the counts and sums are all-reduced before the update and rank 0 picks the restart vectors and
broadcasts them, so every rank keeps the same codebook.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Quantized(NamedTuple):
    """What :class:`VectorQuantizer` returns for a grid of encoder outputs z_e (B, D, h, w)."""

    z_q: Tensor  # (B, D, h, w): the codes, with the straight-through gradient (d loss/d z_e = d loss/d z_q)
    codes: Tensor  # (B, D, h, w): the codes themselves (no gradient), as they were before this step's update
    indices: Tensor  # (B, h, w) int64: each vector's code
    counts: Tensor  # (K,) float: vectors assigned to each code in this batch (on every rank, when training)


class ResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``: 3x3 to ``hidden`` channels and 1x1 back (the paper's block)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        return x + self.body(x)


def residual_stack(channels: int, hidden: int, blocks: int) -> nn.Sequential:
    """``blocks`` residual blocks followed by a ReLU."""
    return nn.Sequential(*[ResidualBlock(channels, hidden) for _ in range(blocks)], nn.ReLU())


def check_grid(data_shape: tuple[int, ...], downsamples: int, owner: str) -> tuple[int, int, int]:
    """(C, H, W) of ``data_shape``, checked to be an image whose sides halve ``downsamples`` times exactly."""
    if len(data_shape) != 3:
        raise ValueError(f"{owner} models images (C, H, W), got data_shape {tuple(data_shape)}")
    if downsamples < 1:
        raise ValueError(f"{owner}: downsamples must be >= 1, got {downsamples}")
    channels, height, width = data_shape
    step = 2**downsamples
    if height % step or width % step:
        raise ValueError(
            f"{owner}: image sides {height}x{width} must be multiples of 2**downsamples = {step}; "
            "change downsamples or the image size"
        )
    return channels, height, width


def _stage_channels(width: int, downsamples: int) -> list[int]:
    """Channels after each stride-2 step of the encoder: width/2 until the last, which has ``width``."""
    return [width // 2] * (downsamples - 1) + [width]


class VQEncoder(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> encoder outputs z_e (B, embedding_dim, H / 2**downsamples, W / ...).

    ``downsamples`` stride-2 4x4 convolutions (ReLU after each), a 3x3 convolution, ``res_blocks`` residual blocks
    of ``res_hidden`` channels inside, and a 1x1 convolution to ``embedding_dim``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        embedding_dim: int = 64,
        width: int = 64,
        res_blocks: int = 2,
        res_hidden: int = 32,
        downsamples: int = 2,
    ) -> None:
        super().__init__()
        channels, _, _ = check_grid(data_shape, downsamples, "VQEncoder")
        chans = [channels, *_stage_channels(width, downsamples)]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
        self.net = nn.Sequential(
            *layers,
            nn.Conv2d(width, width, 3, padding=1),
            residual_stack(width, res_hidden, res_blocks),
            nn.Conv2d(width, embedding_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """z_e (B, D, h, w) of images x (B, C, H, W)."""
        return self.net(x)


class VQDecoder(nn.Module):
    """Codes (B, embedding_dim, h, w) -> unnormalized image parameters (B, C, H, W) (means or logits).

    The mirror image of :class:`VQEncoder`: a 3x3 convolution to ``width``, the residual blocks, and
    ``downsamples`` stride-2 4x4 transposed convolutions, the last one without an activation.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        embedding_dim: int = 64,
        width: int = 64,
        res_blocks: int = 2,
        res_hidden: int = 32,
        downsamples: int = 2,
    ) -> None:
        super().__init__()
        channels, _, _ = check_grid(data_shape, downsamples, "VQDecoder")
        chans = [*reversed(_stage_channels(width, downsamples)), channels]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]
        self.net = nn.Sequential(
            nn.Conv2d(embedding_dim, width, 3, padding=1),
            residual_stack(width, res_hidden, res_blocks),
            *layers[:-1],  # no activation after the output layer
        )

    def forward(self, z_q: Tensor) -> Tensor:
        """Image parameters (B, C, H, W) of codes z_q (B, D, h, w)."""
        return self.net(z_q)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with an EMA codebook, straight-through gradients and dead-code restarts.

    Each training-mode forward, with n_i vectors assigned to code i and s_i their sum (over every rank)::

        N_i <- decay N_i + (1 - decay) n_i          m_i <- decay m_i + (1 - decay) s_i
        N'_i = (N_i + eps) / (sum_j N_j + K eps) * sum_j N_j       (Laplace smoothing)
        e_i = m_i / N'_i

    Every code starts as a cluster of one vector at its own position (N_i = 1, m_i = e_i), so a code nobody
    chooses stays where it is while its statistics decay. The first training forward places the codes at random
    encoder outputs of its batch (``data_init``; else they start N(0, 1)). A code no vector chose for
    ``restart_after`` consecutive training forwards is restarted (N_i = 1, m_i = e_i = v) at an encoder output v of
    the current batch, drawn with probability proportional to its squared distance to its nearest code. Evaluation
    mode changes nothing. The codebook is in buffers (no optimizer touches it; checkpoints keep it).

    Args:
        embedding_dim: D, the size of each code (the family passes it).
        num_codes: K, the codebook size.
        decay: of the moving averages, in (0, 1) (the paper: 0.99).
        eps: Laplace smoothing of the counts.
        restart_after: training forwards without a vector before a code is restarted; 0 never restarts.
        data_init: place the codes at encoder outputs of the first training batch.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_codes: int = 512,
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_after: int = 100,
        data_init: bool = True,
    ) -> None:
        super().__init__()
        if num_codes < 1 or embedding_dim < 1:
            raise ValueError(f"num_codes and embedding_dim must be >= 1, got {num_codes} and {embedding_dim}")
        if not 0.0 < decay < 1.0 or eps <= 0 or restart_after < 0:
            raise ValueError(
                f"decay must be in (0, 1), eps > 0 and restart_after >= 0 (0: no restarts); "
                f"got {decay}, {eps} and {restart_after}"
            )
        self.num_codes, self.embedding_dim = num_codes, embedding_dim
        self.decay, self.eps, self.restart_after = decay, eps, restart_after
        embedding = torch.randn(num_codes, embedding_dim)  # (K, D)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(num_codes))  # (K,) N_i
        self.register_buffer("embed_sum", embedding.clone())  # (K, D) m_i
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))  # (K,)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training forwards so far
        self.register_buffer("initialized", torch.tensor(not data_init))
        self._ready = not data_init  # cache of `initialized`, so a trained quantizer does not read it every step

    # ------------------------------------------------------------------------------------------- lookup
    def nearest(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The nearest code of each vector of z (B, D, h, w): indices (B, h, w) int64 and squared distances
        (B, h, w) float32. Ties go to the lower index."""
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d).float()  # (N, D)
        indices, distances = self._nearest_flat(flat)
        return indices.view(b, h, w), distances.view(b, h, w)

    def _nearest_flat(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        codebook = self.embedding.float()  # (K, D)
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)  # (N, K)
        best, indices = distances.min(1)  # (N,) each
        return indices, best.clamp_min(0)

    def embed(self, indices: Tensor) -> Tensor:
        """The codes (B, D, h, w) of indices (B, h, w)."""
        return self.embedding[indices].permute(0, 3, 1, 2)  # (B, D, h, w)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, z_e: Tensor) -> Quantized:
        """Quantize z_e (B, D, h, w); in training mode, then update the codebook (see the class docstring)."""
        b, d, h, w = z_e.shape
        if d != self.embedding_dim:
            raise ValueError(
                f"VectorQuantizer expects {self.embedding_dim} channels, got z_e of shape {tuple(z_e.shape)}"
            )
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d).float()  # (N, D)
        if self.training and not self._ready:
            self._ready = bool(self.initialized)  # a loaded codebook is in place already
            if not self._ready:
                self._initialize(flat)
        indices, distances = self._nearest_flat(flat)  # (N,) each
        codes = self.embedding[indices].view(b, h, w, d).permute(0, 3, 1, 2).to(z_e.dtype)  # (B, D, h, w), a copy
        counts = torch.bincount(indices, minlength=self.num_codes).float()  # (K,)
        if self.training:
            with torch.no_grad():
                counts = self._update(flat, indices, counts)
                self._restart_dead(flat, distances)
        z_q = z_e + (codes - z_e).detach()  # (B, D, h, w): the codes' values, the identity's gradient
        return Quantized(z_q, codes, indices.view(b, h, w), counts)

    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
        """Fold this batch's counts (K,) and sums (K, D) of every rank into the EMA codebook; returns the counts."""
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)  # (K, D)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total  # (K,)
        self.embedding.copy_(self.embed_sum / smoothed[:, None])
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        self.steps.add_(1)
        return counts

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor, distances: Tensor) -> None:
        """Restart the codes unused for ``restart_after`` forwards at vectors of this batch (the same on every rank)."""
        if self.restart_after == 0:
            return
        dead = self.unused_steps >= self.restart_after  # (K,), the same on every rank
        num = int(dead.sum())
        if num:
            self._place(dead, self._pick(flat, distances, num))

    @torch.no_grad()
    def _initialize(self, flat: Tensor) -> None:
        """Place every code at a random vector of the first training batch (rank 0's, on every rank)."""
        everyone = torch.ones(self.num_codes, dtype=torch.bool, device=flat.device)
        self._place(everyone, self._pick(flat, torch.ones(len(flat), device=flat.device), self.num_codes))
        self.initialized.fill_(True)
        self._ready = True

    def _pick(self, flat: Tensor, weights: Tensor, num: int) -> Tensor:
        """``num`` rows (num, D) of rank 0's ``flat`` (N, D), drawn with probability proportional to ``weights`` (N,)
        (without replacement while there are enough), broadcast to every rank. The draw is seeded by the step
        count, so it leaves the global random state alone and a resumed run draws as the uninterrupted one."""
        if not _distributed() or dist.get_rank() == 0:
            generator = torch.Generator().manual_seed(int(self.steps))
            weights = weights.detach().float().cpu()
            if not bool((weights > 0).any()):
                weights = torch.ones_like(weights)
            enough = int((weights > 0).sum()) >= num
            rows = torch.multinomial(weights, num, replacement=not enough, generator=generator)  # (num,)
            chosen = flat[rows.to(flat.device)].clone()  # (num, D)
        else:
            chosen = torch.empty(num, flat.shape[1], dtype=flat.dtype, device=flat.device)
        if _distributed():
            dist.broadcast(chosen, src=0)
        return chosen

    def _place(self, which: Tensor, vectors: Tensor) -> None:
        """Codes ``which`` (K,) bool become clusters of one vector at ``vectors`` (num, D)."""
        vectors = vectors.to(self.embedding.dtype)
        self.embedding[which] = vectors
        self.embed_sum[which] = vectors
        self.cluster_size[which] = 1.0
        self.unused_steps[which] = 0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
