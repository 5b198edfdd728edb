"""A process of the two-rank codebook test (tests/unit/test_vqvae.py): light to import, so spawning is quick."""

import os

import torch

from genlit.nets.vqvae import VectorQuantizer


def quantizer(codebook: torch.Tensor, restart_after: int) -> VectorQuantizer:
    """A training-mode quantizer whose codes start at ``codebook`` (K, D), as clusters of one vector each."""
    layer = VectorQuantizer(codebook.shape[1], num_codes=codebook.shape[0], decay=0.5, eps=0.1,
                            restart_after=restart_after, data_init=False).train()  # fmt: skip
    layer.embedding.copy_(codebook)
    layer.embed_sum.copy_(codebook)
    return layer


def update_on_rank(rank: int, port: int, codebook: torch.Tensor, batches: torch.Tensor, out: str) -> None:
    """Join a two-process gloo group, quantize this rank's batch (B, D, h, w) once in training mode, save the
    codebook's buffers."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    layer = quantizer(codebook, restart_after=1)
    counts = layer(batches[rank]).counts
    torch.save({"counts": counts, **{name: b.clone() for name, b in layer.named_buffers()}}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()
