"""Tests for genlit.data.images: decoding, splits, labels, augmentation and error messages, all offline."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from genlit.data import hub as hub_module
from genlit.data.images import ImageDataModule, augment_images, to_model_space

DATA_DIR = os.environ.get("GENLIT_DATA_DIR")
needs_mnist = pytest.mark.skipif(
    DATA_DIR is None or not os.path.isdir(os.path.join(DATA_DIR or "", "mnist")),
    reason="GENLIT_DATA_DIR is not set (or has no mnist/): the offline MNIST copy is needed",
)
MNIST = "$GENLIT_DATA_DIR/mnist"


def _write_parquet(path: Path, arrays: list[np.ndarray], labels: list[int] | None = None) -> Path:
    """Write uint8 arrays as PNG-encoded images (plus an int64, non-ClassLabel `label`) to one parquet."""
    columns = {"image": [Image.fromarray(a) for a in arrays]}
    features = {"image": datasets.Image()}
    if labels is not None:
        columns["label"], features["label"] = labels, datasets.Value("int64")
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))
    return path


def _write_pngs(folder: Path, arrays: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def mnist() -> ImageDataModule:
    if DATA_DIR is None:
        pytest.skip("GENLIT_DATA_DIR is not set: the offline MNIST copy is needed")
    dm = ImageDataModule(MNIST, batch_size=50)
    dm.prepare_data()
    dm.setup()
    return dm


def test_to_model_space_hand_values():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.allclose(to_model_space(x), torch.tensor([-1.0, -0.6, 1.0]))
    with pytest.raises(TypeError, match="uint8"):
        to_model_space(torch.zeros(3))


@needs_mnist
def test_mnist_shapes_splits_and_labels(mnist):
    assert mnist.data_shape == (1, 28, 28) and mnist.num_classes == 10
    assert (len(mnist._train), len(mnist._val), len(mnist._test)) == (8550, 450, 1000)
    x, y = next(iter(mnist.train_dataloader()))
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    x, y = mnist.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    all_labels = torch.cat([mnist._train.tensors[1], mnist._val.tensors[1], mnist._test.tensors[1]])
    assert set(all_labels.tolist()) == set(range(10))
    assert len(mnist.train_dataloader()) == 8550 // 50 and len(mnist.val_dataloader()) == 9


@needs_mnist
def test_val_carve_is_seeded_and_partitions_train(mnist):
    same = ImageDataModule(MNIST, seed=0)
    same.setup("fit")
    assert torch.equal(same._val.tensors[0], mnist._val.tensors[0])
    other = ImageDataModule(MNIST, seed=1)
    other.setup("fit")
    assert not torch.equal(other._val.tensors[1], mnist._val.tensors[1])
    # train + val is exactly the train split: same label histogram, same pixel sum
    full = datasets.load_dataset(os.path.expandvars(MNIST), split="train")
    counts = torch.bincount(torch.tensor(full["label"][:]), minlength=10)
    carved = torch.cat([other._train.tensors[1], other._val.tensors[1]])
    assert torch.equal(torch.bincount(carved, minlength=10), counts)
    pixel_sum = lambda dm: sum(int(d.tensors[0].sum(dtype=torch.int64)) for d in (dm._train, dm._val))  # noqa: E731
    assert pixel_sum(other) == pixel_sum(mnist)


@needs_mnist
def test_mnist_resized_to_32_rgb(mnist):
    dm = ImageDataModule(MNIST, image_size=32, channels=3, test_split=None)
    dm.setup("fit")
    x = dm._val.tensors[0]
    assert dm.data_shape == (3, 32, 32) and x.shape == (450, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey replicated into RGB
    # bilinear resizing keeps the mean brightness within a few grey levels
    assert abs(x.float().mean() - mnist._val.tensors[0].float().mean()) < 3.0
    with pytest.raises(ValueError, match="no test split None"):
        dm.test_dataloader()


def test_resize_and_center_crop_by_hand(tmp_path):
    wide = np.full((10, 14), 100, np.uint8)  # (H, W): middle 10 columns 100, two black/white on each side
    wide[:, :2], wide[:, -2:] = 0, 255
    path = _write_parquet(tmp_path / "wide.parquet", [wide] * 2)
    kw = dict(label_column=None, image_size=10, cache_dir=str(tmp_path / "cache"))
    crop = ImageDataModule(str(path), resize="center_crop", **kw)
    crop.setup("fit")
    assert (crop._train.tensors[0] == 100).all()  # the central 10x10 square only
    squeeze = ImageDataModule(str(path), resize="resize", **kw)
    squeeze.setup("fit")
    row = squeeze._train.tensors[0][0, 0, 0]  # (10,)
    assert row[0] < 50 and row[-1] > 200 and (row[3:7] == 100).all()


def test_imagefolder_with_classes_and_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        _write_pngs(tmp_path / "cls" / "train" / cls, list(rng.integers(0, 256, (5, 12, 12, 3), np.uint8)))
    cache = str(tmp_path / "cache")
    dm = ImageDataModule(str(tmp_path / "cls"), channels=3, image_size=12, batch_size=4, cache_dir=cache)
    assert dm.num_classes == 2  # from the ClassLabel that imagefolder infers from the folder names
    dm.setup()
    images, labels = dm._train.tensors
    assert images.shape == (9, 3, 12, 12) and len(dm._val) == 1  # 5% of 10, at least one image
    assert sorted(torch.cat([labels, dm._val.tensors[1]]).tolist()) == [0] * 5 + [1] * 5
    with pytest.raises(ValueError, match="no test split 'test'.*splits: train"):
        dm.test_dataloader()

    _write_pngs(tmp_path / "flat", [np.full((8, 8), 30 * i, np.uint8) for i in range(6)])
    flat = ImageDataModule(str(tmp_path / "flat"), label_column=None, image_size=8, cache_dir=cache)
    assert flat.num_classes == 0
    flat.setup("fit")
    assert (flat._train.tensors[1] == -1).all() and (flat._val.tensors[1] == -1).all()
    corners = torch.cat([flat._train.tensors[0], flat._val.tensors[0]])[:, 0, 0, 0]  # (6,)
    assert sorted(corners.tolist()) == [0, 30, 60, 90, 120, 150]
    with pytest.raises(ValueError, match=r"label column 'label' not in .*columns: image.*--data.label_column"):
        ImageDataModule(str(tmp_path / "flat"), cache_dir=cache).setup("fit")


def test_augment_images_flips_and_crops_per_image():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (B, C, H, W)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        out = augment_images(x, hflip=True, generator=gen)
        assert out.shape == x.shape
        for i in range(2):
            assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    flips = torch.stack([augment_images(x, hflip=True, generator=gen)[:, 0, 0, 0] for _ in range(50)])
    assert (flips == x[:, 0, 0, 4]).any() and (flips == x[:, 0, 0, 0]).any()  # both outcomes happen
    p = 2
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    windows = {padded[i, :, t : t + 4, s : s + 5] for i in range(2) for t in range(5) for s in range(5)}
    out = augment_images(x, crop_padding=p, generator=gen)
    assert out.shape == x.shape
    assert all(any(torch.equal(o, w) for w in windows) for o in out)
    zeros = augment_images(torch.ones(64, 1, 4, 4), crop_padding=1, padding_mode="zeros", generator=gen)
    assert set(zeros.unique().tolist()) == {-1.0, 1.0}  # black borders where the window moved off centre


def test_augmentation_only_while_training(tmp_path):
    path = _write_parquet(tmp_path / "white.parquet", [np.full((6, 6), 255, np.uint8)] * 8)
    dm = ImageDataModule(str(path), label_column=None, image_size=6, random_crop_padding=2, padding_mode="zeros")
    batch = (torch.full((16, 1, 6, 6), 255, dtype=torch.uint8), torch.zeros(16, dtype=torch.int64))
    assert (dm.on_after_batch_transfer(batch, 0)[0] == 1.0).all()  # no trainer (notebook): no augmentation
    dm.trainer = SimpleNamespace(training=False)
    assert (dm.on_after_batch_transfer(batch, 0)[0] == 1.0).all()
    dm.trainer = SimpleNamespace(training=True)
    assert (dm.on_after_batch_transfer(batch, 0)[0] == -1.0).any()


class _Recorder(L.LightningModule):
    """Records the smallest input value seen per stage; learns nothing useful."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[float]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(float(batch[0].min()))
        return (self.w * batch[0].mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(float(batch[0].min()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_calls_the_hook(tmp_path):
    path = _write_parquet(tmp_path / "white.parquet", [np.full((6, 6), 255, np.uint8)] * 40)
    dm = ImageDataModule(
        str(path), label_column=None, image_size=6, batch_size=8, val_fraction=0.2, random_crop_padding=2,
        padding_mode="zeros", cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    model = _Recorder()
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=3, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert min(model.seen["train"]) == -1.0 and model.seen["val"] and min(model.seen["val"]) == 1.0


def test_label_errors(tmp_path):
    arrays = [np.zeros((4, 4), np.uint8)] * 4
    path = _write_parquet(tmp_path / "lab.parquet", arrays, labels=[0, 1, 2, 5])
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"not a ClassLabel.*--data.num_classes"):
        _ = ImageDataModule(str(path), image_size=4, cache_dir=cache).num_classes
    with pytest.raises(ValueError, match=r"lie in \[0, 5\], outside \[0, 3\)"):
        ImageDataModule(str(path), image_size=4, num_classes=3, cache_dir=cache).setup("fit")
    ok = ImageDataModule(str(path), image_size=4, num_classes=6, cache_dir=cache)
    ok.setup("fit")
    assert sorted(torch.cat([ok._train.tensors[1], ok._val.tensors[1]]).tolist()) == [0, 1, 2, 5]


def test_path_and_column_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLIT_TEST_UNSET", raising=False)
    with pytest.raises(ValueError, match=r"\$GENLIT_TEST_UNSET .* is not set"):
        ImageDataModule("$GENLIT_TEST_UNSET/mnist").setup()
    for missing in (str(tmp_path / "nope"), "./nope", "~/genlit-nope", "nope.parquet"):
        with pytest.raises(FileNotFoundError, match=r"does not exist; point --data.dataset"):
            ImageDataModule(missing).setup()
    path = _write_parquet(tmp_path / "one.parquet", [np.zeros((4, 4), np.uint8)] * 3)
    with pytest.raises(ValueError, match=r"image column 'img' not in .*columns: image.*--data.image_column"):
        ImageDataModule(str(path), image_column="img", label_column=None, cache_dir=str(tmp_path)).setup()
    with pytest.raises(ValueError, match=r"needs .* GB, more than --data.max_memory_gb.*use --data.storage disk"):
        ImageDataModule(str(path), label_column=None, max_memory_gb=1e-6, cache_dir=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="channels 2 is not supported; use one of"):
        ImageDataModule(str(path), channels=2)
    with pytest.raises(ValueError, match="split 'dev' not in .*splits: train.*--data.val_split"):
        ImageDataModule(str(path), label_column=None, val_split="dev", cache_dir=str(tmp_path)).setup()


def test_hub_without_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "_hub_reachable", lambda timeout=5.0: False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"could not load 'genlit-test/absent' .*--data.dataset"):
        ImageDataModule("genlit-test/absent", cache_dir=str(tmp_path)).setup()
    assert time.perf_counter() - start < 5.0


def test_hub_dataset_loads_from_cache_without_network(tmp_path, monkeypatch):
    # Build the cache entry `datasets` keeps for a downloaded Hub dataset (owner___name/config/version/hash)
    # from a local parquet; the probe must not even be needed.
    path = _write_parquet(tmp_path / "tiny.parquet", [np.full((4, 4), 9, np.uint8)] * 5, labels=[0] * 5)
    cache = tmp_path / "cache"
    loaded = datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(cache))["train"]
    built = Path(loaded.cache_files[0]["filename"])
    entry = cache / "genlit-test___tiny" / "default" / "0.0.0" / "0"
    shutil.copytree(built.parent, entry)
    (entry / built.name).rename(entry / "tiny-train.arrow")
    monkeypatch.setattr(hub_module, "_hub_reachable", lambda timeout=5.0: pytest.fail("probed the network"))
    dm = ImageDataModule("genlit-test/tiny", image_size=4, num_classes=1, cache_dir=str(cache))
    dm.setup("fit")
    assert len(dm._train) + len(dm._val) == 5 and (dm._train.tensors[0] == 9).all()
