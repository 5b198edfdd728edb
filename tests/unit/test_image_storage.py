"""Images larger than memory: ``storage: disk`` (memory-mapped, decoded per batch) gives the in-memory path's
batches; ``storage: stream`` splits across ranks, carves validation, reshuffles per epoch and resumes."""

import itertools
from types import SimpleNamespace

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from genlit.data.images import ImageDataModule


@pytest.fixture(autouse=True)
def no_shutdown_sleep(monkeypatch):
    """`datasets` sleeps 5 s whenever a parquet stream is left before its end (apache/arrow#45214); the
    tests leave many, so skip the wait here."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture(scope="module")
def small_mnist(data_dir, tmp_path_factory):
    """640 train and 128 test rows of MNIST as parquet in row groups of 64: a stream that opens fast."""
    import datasets

    raw = datasets.load_dataset(str(data_dir / "mnist"))
    root = tmp_path_factory.mktemp("small_mnist")
    raw["train"].select(range(640)).to_parquet(str(root / "train-00000-of-00001.parquet"), batch_size=64)
    raw["test"].select(range(128)).to_parquet(str(root / "test-00000-of-00001.parquet"), batch_size=64)
    return root


def module(data_dir, storage, **kwargs) -> ImageDataModule:
    kwargs = {"batch_size": 32, **kwargs}
    dm = ImageDataModule(str(data_dir / "mnist"), storage=storage, **kwargs)
    dm.prepare_data()
    return dm


def first_batches(loader, n: int) -> list:
    batches = iter(loader)
    return [next(batches) for _ in range(n)]


def same_batches(a: list, b: list) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def assert_resumes_after(dm: ImageDataModule, served: int) -> None:
    """A fresh train loader given the state after ``served`` batches serves the next two batches again."""
    loader = dm.train_dataloader()
    batches = iter(loader)
    for _ in range(served):
        next(batches)
    state = loader.state_dict()
    expected = [next(batches) for _ in range(2)]
    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    assert same_batches(first_batches(fresh, 2), expected)


@pytest.mark.parametrize("held_out", [None, [3, 7]])
def test_disk_storage_serves_the_in_memory_batches(data_dir, held_out):
    loaders = {}
    for storage in ("memory", "disk"):
        dm = module(data_dir, storage, held_out_classes=held_out, num_workers=0)
        dm.setup("fit")
        torch.manual_seed(0)  # the train sampler draws its shuffle seed from the global generator
        loaders[storage] = (dm, first_batches(dm.train_dataloader(), 3), first_batches(dm.val_dataloader(), 2))
    (mem, mem_train, mem_val), (disk, disk_train, disk_val) = loaders["memory"], loaders["disk"]
    assert disk_train[0][0].dtype == torch.uint8 and disk_train[0][0].shape == (32, 1, 28, 28)
    assert same_batches(disk_train, mem_train) and same_batches(disk_val, mem_val)
    assert len(disk._train) == len(mem._train) and len(disk._val) == len(mem._val)
    if held_out:
        assert not torch.isin(disk._train.labels(), torch.tensor(held_out)).any()
    images, labels = disk.split_tensors("val", limit=50)
    assert torch.equal(images, mem.split_tensors("val")[0][:50]) and labels.shape == (50,)


def test_disk_loader_resumes_mid_epoch_in_worker_processes(data_dir):
    dm = module(data_dir, "disk", num_workers=2)
    dm.setup("fit")
    torch.manual_seed(1)
    assert_resumes_after(dm, 3)


def pixels(examples) -> list[bytes]:
    return [bytes(e["pixels"].tobytes()) for e in examples]


def stream(source, rank: int = 0, world_size: int = 1, **kwargs) -> ImageDataModule:
    dm = ImageDataModule(str(source), storage="stream", **{"batch_size": 32, "shuffle_buffer": 16, **kwargs})
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size, current_epoch=0)
    dm.setup("fit")
    return dm


def test_stream_carves_validation_by_content_and_trains_on_the_rest(small_mnist):
    dm = stream(small_mnist, val_fraction=0.05)
    val_images, val_labels = dm.split_tensors("val")
    train = pixels(dm._train)
    assert 0.025 < len(val_labels) / 640 < 0.08 and len(train) + len(val_labels) == 640
    assert set(train).isdisjoint(bytes(x.numpy().tobytes()) for x in val_images)
    again = stream(small_mnist, val_fraction=0.05, shuffle_buffer=8, seed=3)
    assert torch.equal(again.split_tensors("val")[1], val_labels)  # the carve ignores order and seed


@pytest.mark.parametrize("shards", [1, 2])
def test_stream_ranks_get_disjoint_shares_and_equal_epochs(small_mnist, tmp_path, shards):
    source = small_mnist
    if shards == 2:  # unequal parquet shards: datasets gives each rank whole shards
        import datasets

        train = datasets.load_dataset(str(small_mnist))["train"]
        (source := tmp_path / "mnist").mkdir()
        train.select(range(400)).to_parquet(str(source / "train-00000-of-00002.parquet"))
        train.select(range(400, 640)).to_parquet(str(source / "train-00001-of-00002.parquet"))
    shares, lengths = [], []
    for rank in (0, 1):
        dm = stream(source, rank, world_size=2)
        lengths.append(len(dm.train_dataloader()))
        shares.append(pixels(itertools.islice(dm._train, 230)))  # the share repeats endlessly
    assert lengths == [int(640 * 0.95) // 64] * 2  # one pass over the train rows (less the carve), shared out
    assert len(set(shares[0]) & set(shares[1])) == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_reshuffles_every_epoch_and_resumes_its_position(small_mnist, workers):
    dm = stream(small_mnist, shuffle_buffer=1, num_workers=workers)  # buffer 1: the stream's order, exact resume
    assert isinstance(dm.train_dataloader(), StatefulDataLoader)
    assert_resumes_after(dm, 4)

    shuffled = stream(small_mnist, shuffle_buffer=256)
    epoch0 = first_batches(shuffled.train_dataloader(), 1)[0][1]
    shuffled.trainer.current_epoch = 1
    epoch1 = first_batches(shuffled.train_dataloader(), 1)[0][1]
    shuffled.trainer.current_epoch = 0
    again = first_batches(shuffled.train_dataloader(), 1)[0][1]
    assert torch.equal(epoch0, again) and not torch.equal(epoch0, epoch1)


def test_storage_errors_name_the_fix(data_dir):
    with pytest.raises(ValueError, match="storage 'ram' is not known; use one of memory, disk, stream"):
        ImageDataModule(str(data_dir / "mnist"), storage="ram")
    with pytest.raises(ValueError, match="shuffle_buffer 0 must be >= 1"):
        ImageDataModule(str(data_dir / "mnist"), storage="stream", shuffle_buffer=0)
    dm = ImageDataModule(str(data_dir / "mnist"), max_memory_gb=0.001)
    with pytest.raises(ValueError, match="use --data.storage disk"):
        dm.prepare_data()
    with pytest.raises(ValueError, match="held_out_classes filter it; use --data.storage disk"):
        stream(data_dir / "mnist", world_size=2, held_out_classes=[1])
    with pytest.raises(ValueError, match="image column 'picture' not in split 'train'"):
        stream(data_dir / "mnist", image_column="picture")
