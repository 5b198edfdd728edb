"""A process of the two-rank actnorm test (tests/unit/test_flows.py): light to import, so spawning is quick."""

import os

import torch

from genlit.nets.flows import ActNorm


def initialize_on_rank(rank: int, port: int, batches: torch.Tensor, out: str) -> None:
    """Join a two-process gloo group, initialize an ActNorm on this rank's batch, save its parameters."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    layer = ActNorm(batches.shape[2]).train()
    layer(batches[rank])
    torch.save({"loc": layer.loc.detach(), "log_scale": layer.log_scale.detach()}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()
