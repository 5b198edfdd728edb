"""Run under ``torch.distributed.run`` with 2 CPU ranks: each rank feeds its shard of fixed features to
SampleQuality; rank 0 writes the gathered figures to the JSON path given."""

import json
import sys

import torch
import torch.distributed as dist

from genlit.metrics.fidelity import SampleQuality


def features(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real (400, 8), fake (300, 8), fake logits (300, 4)) float64, the same in every process."""
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn(400, 8, generator=generator, dtype=torch.float64)
    fake = 0.9 * torch.randn(300, 8, generator=generator, dtype=torch.float64) + 0.2
    return real, fake, torch.randn(300, 4, generator=generator, dtype=torch.float64)


def quality(real, fake, logits) -> dict[str, float]:
    """The figures of one process seeing these features."""
    metric = SampleQuality(8, 4, kid_subset_size=100, kid_subsets=10, is_splits=2)
    metric.update_real(real)
    metric.update_fake(fake, logits)
    return metric.compute()


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    real, fake, logits = features(0)
    shard = slice(rank * len(real) // world, (rank + 1) * len(real) // world)
    fake_shard = slice(rank * len(fake) // world, (rank + 1) * len(fake) // world)
    values = quality(real[shard], fake[fake_shard], logits[fake_shard])
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(values, f)
    dist.destroy_process_group()
