"""Sample requests and the writer that joins the ranks' shards."""

import numpy as np
import pytest
import torch

from genlit.callbacks.sample_writer import merge_shards, write_shard
from genlit.data.requests import SampleRequests


def test_requests_cover_every_index_once_in_batches():
    requests = SampleRequests(num=10, seed=3, batch_size=4, label=2).requests()
    assert [r["indices"].tolist() for r in requests] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(int(r["seed"]) == 3 and (r["labels"] == 2).all() for r in requests)
    with pytest.raises(ValueError, match="num >= 1"):
        SampleRequests(num=0)


def part(indices):
    indices = torch.tensor(indices)
    return {"indices": indices, "samples": indices.float()[:, None] * torch.ones(1, 2), "labels": indices % 3}


def test_shards_merge_in_index_order_without_the_padding_repeats(tmp_path):
    write_shard(tmp_path / "r0.npz", [part([0, 1]), part([4, 5])])
    write_shard(tmp_path / "r1.npz", [part([2, 3]), part([0, 1])])  # DistributedSampler pads rank 1 with a repeat
    samples, labels = merge_shards([tmp_path / "r0.npz", tmp_path / "r1.npz"])
    assert samples[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and labels.tolist() == [0, 1, 2, 0, 1, 2]
    write_shard(tmp_path / "r2.npz", [part([0, 2])])
    with pytest.raises(ValueError, match="miss sample indices"):
        merge_shards([tmp_path / "r2.npz"])
    assert np.load(tmp_path / "r0.npz")["indices"].tolist() == [0, 1, 4, 5]


def test_the_writer_wants_an_npz():
    from genlit.callbacks.sample_writer import SampleWriter

    with pytest.raises(ValueError, match="SampleWriter out must end in .npz"):
        SampleWriter("samples.png")
