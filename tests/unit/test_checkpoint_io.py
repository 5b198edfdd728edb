"""Checkpoint writes are atomic: a failure in the middle of a write leaves the previous checkpoint whole."""

import pytest
import torch

from genlit.callbacks.checkpoints import AtomicCheckpointIO, TimedCheckpoint


def test_a_write_that_fails_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill would: mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    monkeypatch.undo()
    io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 2


def test_timed_checkpoint_checks_its_interval():
    assert TimedCheckpoint(minutes=2)._train_time_interval.total_seconds() == 120
    with pytest.raises(ValueError, match="minutes must be > 0"):
        TimedCheckpoint(minutes=0)
