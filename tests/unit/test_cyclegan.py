"""CycleGAN: its nets, the history pool, the losses and steps of the family, translating, the unpaired DataModule
and the coloured-digit domain; all offline, on small synthetic datasets."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DistributedSampler

from genlit.data.domains import ColouredDigits, hsv_to_rgb
from genlit.data.unpaired import UnpairedImageDataModule
from genlit.families.cyclegan import POOLS_KEY, CycleGAN
from genlit.families.protocols import Generative, Translator
from genlit.nets.cyclegan import PatchDiscriminator, ResnetGenerator
from genlit.objectives.image_pool import ImagePool

ROWS = 40  # rows of the synthetic train split; image i is filled with the value 5 * i, label i % 10


# ------------------------------------------------------------------------------------------------------- data
def _write_split(path: Path, values: list[int], size: int = 8) -> None:
    images = [Image.fromarray(np.full((size, size), v, np.uint8)) for v in values]
    columns = {"image": images, "label": [v // 5 % 10 for v in values]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """A local dataset (train: 40 rows, test: 10), each image filled with 5 x its row (train) or 200 + 5 x row."""
    folder = tmp_path_factory.mktemp("numbered")
    _write_split(folder / "train-00000-of-00001.parquet", [5 * i for i in range(ROWS)])
    _write_split(folder / "test-00000-of-00001.parquet", [200 + 5 * i for i in range(10)])
    return str(folder)


def datamodule(source: str, **kwargs) -> UnpairedImageDataModule:
    args = {"dataset": source, "image_size": 8, "batch_size": 4, "val_fraction": 0.1} | kwargs
    data = UnpairedImageDataModule(**args)
    data.prepare_data()
    data.setup("fit")
    return data


def row_of(images: torch.Tensor) -> torch.Tensor:
    """The source row each synthetic grey image (N, 1, H, W) was filled with."""
    return images[:, 0, 0, 0].long() // 5


def test_index_halves_are_disjoint_domains_covering_the_split(source):
    data = datamodule(source)
    rows = {d: torch.cat([data.source_rows(d, s) for s in ("train", "val")]) for d in "AB"}
    assert sorted(rows["A"].tolist()) == list(range(ROWS // 2))
    assert sorted(rows["B"].tolist()) == list(range(ROWS // 2, ROWS))
    images, labels = data.split_tensors("A", "train")
    assert torch.equal(row_of(images), data.source_rows("A", "train"))  # the pixels are those rows' images
    assert torch.equal(labels, data.source_rows("A", "train") % 10)
    assert len(data.split_tensors("A", "val")[0]) == 2  # 10% of 20


def test_label_values_split_one_dataset(source):
    data = datamodule(source, values_a=[0, 1, 2], values_b=[7])
    assert set(data.split_tensors("A", "train")[1].tolist() + data.split_tensors("A", "val")[1].tolist()) == {0, 1, 2}
    assert set(data.split_tensors("B", "train")[1].tolist()) == {7}


def test_coloured_domain_is_built_from_rows_domain_a_never_uses_and_is_deterministic(source):
    data = datamodule(source, render_b=ColouredDigits(seed=3))
    assert data.shape_a == (1, 8, 8) and data.shape_b == (3, 8, 8)
    used_by_a = set(torch.cat([data.source_rows("A", s) for s in ("train", "val")]).tolist())
    used_by_b = set(torch.cat([data.source_rows("B", s) for s in ("train", "val")]).tolist())
    assert used_by_a.isdisjoint(used_by_b) and len(used_by_a) + len(used_by_b) == ROWS
    coloured = data.split_tensors("B", "train")[0]
    assert coloured.shape[1] == 3 and coloured.dtype == torch.uint8
    again = datamodule(source, render_b=ColouredDigits(seed=3)).split_tensors("B", "train")[0]
    other = datamodule(source, render_b=ColouredDigits(seed=4)).split_tensors("B", "train")[0]
    assert torch.equal(coloured, again) and not torch.equal(coloured, other)


def test_coloured_digits_depend_on_the_row_not_on_the_batch():
    digits = torch.zeros(6, 1, 12, 12, dtype=torch.uint8)
    digits[:, :, 3:9, 5:7] = 255  # a bar: the stroke
    render = ColouredDigits(seed=0)
    together = render(digits, torch.arange(10, 16), "train")
    alone = torch.cat([render(digits[i : i + 1], torch.tensor([10 + i]), "train") for i in range(6)])
    assert torch.equal(together, alone)
    assert not torch.equal(together, render(digits, torch.arange(10, 16), "test"))  # splits draw apart
    stroke, background = together[:, :, 3:9, 5:7].float().mean((1, 2, 3)), together[:, :, :, :3].float().mean((1, 2, 3))
    assert ((stroke - background).abs() > 60).all()  # strokes stand out in brightness from their background
    with pytest.raises(ValueError, match=r"renders uint8 images \(N, 1, H, W\)"):
        render(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.tensor([0]), "train")
    assert torch.allclose(hsv_to_rgb(torch.tensor([[0.0, 1.0, 1.0], [1 / 3, 1.0, 0.5]])),
                          torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]))  # fmt: skip


def test_train_batches_pair_two_independent_shuffles(source):
    data = datamodule(source, batch_size=2)
    torch.manual_seed(0)
    batches = list(data.train_dataloader())
    a_rows = torch.cat([row_of(batch[0]["A"][0]) for batch in batches])
    b_rows = torch.cat([row_of(batch[0]["B"][0]) for batch in batches])
    assert sorted(a_rows.tolist()) == sorted(data.source_rows("A", "train").tolist())
    assert sorted(b_rows.tolist()) == sorted(data.source_rows("B", "train").tolist())
    assert not torch.equal(b_rows - ROWS // 2, a_rows)  # B's order is not A's order: no fixed pairing
    a, b = data.on_after_batch_transfer(batches[0][0], 0)
    assert a.shape == b.shape == (2, 1, 8, 8) and a.dtype == torch.float32 and a.min() >= -1


def test_under_ddp_each_domain_has_its_own_shuffle(source):
    data = datamodule(source, batch_size=2)
    data.trainer = SimpleNamespace(global_rank=0, world_size=2)
    loaders = data.train_dataloader().iterables
    samplers = [loaders[d].sampler for d in "AB"]
    assert all(isinstance(s, DistributedSampler) for s in samplers) and samplers[0].seed != samplers[1].seed
    assert list(samplers[0]) != list(samplers[1])


def test_test_split_and_examples(source):
    data = datamodule(source, render_b=ColouredDigits())
    data.setup("test")
    assert row_of(data.split_tensors("A", "test")[0]).tolist() == [40 + i for i in range(5)]  # 200 + 5i -> 40 + i
    assert data.source_rows("B", "test").tolist() == [5, 6, 7, 8, 9]
    examples = data.examples(3)
    assert examples["A"].shape == (2, 1, 8, 8) and examples["B"].shape == (2, 3, 8, 8)  # 2 validation images each


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": None, "domain_a": "x"}, "has no domain B: set --data.domain_b"),
        ({"dataset": None, "domain_b": "x"}, "has no domain A: set --data.domain_a"),
        ({"domain_a": "x", "domain_b": "y"}, "not both"),
        ({"values_a": [1, 2], "values_b": [2]}, "must be non-empty and disjoint"),
        ({"values_a": [1]}, "give both"),
        ({"render_b": ColouredDigits(), "channels_b": 3}, "set --data.channels_b 1"),
        ({"channels_a": 2}, "channels_a 2 is not supported"),
    ],
)
def test_bad_options_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        UnpairedImageDataModule(**({"dataset": "somewhere"} | kwargs))
    assert "\n" not in str(error.value)


def test_empty_or_missing_domain_is_one_clear_line(source, tmp_path):
    with pytest.raises(ValueError, match=r"domain B is empty: .* has no image with label in \[99\]; check "):
        datamodule(source, values_a=[1], values_b=[99])
    with pytest.raises(FileNotFoundError, match="point --data.domain_b at an existing"):
        datamodule(None, domain_a=source, domain_b=str(tmp_path / "nowhere"))


def test_two_datasets_give_one_domain_each(source):
    data = datamodule(None, domain_a=source, domain_b=source, channels_b=3)
    assert len(data.split_tensors("A", "train")[0]) + len(data.split_tensors("A", "val")[0]) == ROWS
    assert data.split_tensors("B", "train")[0].shape[1:] == (3, 8, 8)


# ------------------------------------------------------------------------------------------------------- nets
@pytest.mark.parametrize("c_in, c_out", [(1, 3), (3, 1), (3, 3)])
def test_generator_maps_between_channel_counts(c_in, c_out):
    net = ResnetGenerator((c_in, 28, 28), (c_out, 28, 28), width=8, num_blocks=2)
    out = net(torch.randn(2, c_in, 28, 28))
    assert out.shape == (2, c_out, 28, 28) and out.abs().max() <= 1


@pytest.mark.parametrize("layers, patches", [(1, 12), (2, 5), (3, 1)])
def test_patch_discriminator_judges_patches(layers, patches):
    assert PatchDiscriminator((3, 28, 28), width=8, num_layers=layers)(torch.randn(2, 3, 28, 28)).shape == (
        2, 1, patches, patches)  # fmt: skip


def test_net_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="do not halve 3 times; lower num_downsamples"):
        ResnetGenerator((1, 28, 28), (3, 28, 28), num_downsamples=3)
    with pytest.raises(ValueError, match="translates at one size"):
        ResnetGenerator((1, 28, 28), (3, 32, 32))
    with pytest.raises(ValueError, match="leave no patch of 28x28 images; lower num_layers"):
        PatchDiscriminator((1, 28, 28), num_layers=4)
    with pytest.raises(ValueError, match="norm 'batch' is not known"):
        PatchDiscriminator((1, 28, 28), norm="batch")


# ------------------------------------------------------------------------------------------------------- pool
def test_pool_fills_to_capacity_first_returning_the_fresh_images():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    fresh = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(fresh), fresh) and len(pool) == 3
    assert float(pool.query(torch.full((1, 1, 1, 1), 10.0))) == 10.0 and len(pool) == 4  # the 4th fills it
    assert pool.images.flatten().tolist() == [0.0, 1.0, 2.0, 10.0]
    out = pool.query(torch.full((40, 1, 1, 1), 20.0)).flatten()  # full now: old images come back, 20s go in
    assert len(pool) == 4 and set(out.tolist()) > {20.0} and 20.0 in pool.images.flatten().tolist()


def test_full_pool_returns_an_old_image_half_the_time_and_stores_the_new_one():
    pool = ImagePool(50, torch.Generator().manual_seed(0))
    pool.query(torch.arange(50.0).view(50, 1, 1, 1))  # images 0..49 fill it
    swapped = 0
    for step in range(2000):
        new = torch.full((1, 1, 1, 1), 1000.0 + step)
        before = set(pool.images.flatten().tolist())
        out = float(pool.query(new))
        after = set(pool.images.flatten().tolist())
        if out == 1000.0 + step:  # passed through: the pool is unchanged
            assert after == before
        else:  # an old image came back and the new one took its place
            swapped += 1
            assert out in before and out not in after and 1000.0 + step in after and len(after) == 50
    assert 0.45 < swapped / 2000 < 0.55


def test_pool_state_round_trips_and_zero_capacity_passes_through():
    pool = ImagePool(5)
    pool.query(torch.randn(3, 2, 4, 4))
    copy = ImagePool(5)
    copy.load_state_dict(pool.state_dict())
    assert len(copy) == 3 and torch.equal(copy.images[:3], pool.images[:3])
    fresh = torch.randn(4, 2, 4, 4)
    assert torch.equal(ImagePool(0).query(fresh), fresh)
    with pytest.raises(ValueError, match="holds 5 images, this one 6"):
        ImagePool(6).load_state_dict(pool.state_dict())


# ----------------------------------------------------------------------------------------------------- family
class Gain(nn.Module):
    """A 'generator' y = gain * x between domains of the same shape (one parameter, so an optimizer has work)."""

    def __init__(self, in_shape, out_shape, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x


def small_cyclegan(shape_a=(1, 8, 8), shape_b=(3, 8, 8), **kwargs) -> CycleGAN:
    gen = partial(ResnetGenerator, width=4, num_blocks=1, num_downsamples=1)
    disc = partial(PatchDiscriminator, width=4, num_layers=1)
    return CycleGAN(gen, disc, shape_a, shape_b, **({"identity_weight": 0.0} | kwargs))


def fit(model: CycleGAN, data: UnpairedImageDataModule, batches: int) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.mark.parametrize("gain, zero", [(1.0, True), (0.5, False)])
def test_cycle_loss_is_zero_for_an_identity_pair_of_generators(source, gain, zero):
    model = CycleGAN(partial(Gain, gain=gain), partial(PatchDiscriminator, width=4, num_layers=1), (1, 8, 8), (1, 8, 8))
    trainer = fit(model, datamodule(source, batch_size=4), batches=1)
    cycles = [float(trainer.callback_metrics[f"train/cycle_{c}_epoch"]) for c in ("aba", "bab")]
    identities = [float(trainer.callback_metrics[f"train/identity_{d}_epoch"]) for d in "ab"]
    assert (max(cycles + identities) == 0.0) == zero
    assert min(cycles) > 0.1 or zero  # gain 0.5: |x / 4 - x| of images far from 0


def test_generator_loss_weighs_each_cycle_and_identity_term_by_its_lambda(source):
    disc = partial(PatchDiscriminator, width=4, num_layers=1)
    model = CycleGAN(partial(Gain, gain=0.5), disc, (1, 8, 8), (1, 8, 8), cycle_weight_a=3.0, cycle_weight_b=0.0)
    metrics = {k: float(v) for k, v in fit(model, datamodule(source), batches=1).callback_metrics.items()}
    term = lambda name: metrics[f"train/{name}_epoch"]  # noqa: E731
    adversarial = term("g_adv_ab") + term("g_adv_ba")
    expected = adversarial + 3.0 * term("cycle_aba") + 0.5 * 3.0 * term("identity_a")  # lambda_B = 0: no B terms
    assert term("cycle_bab") > 0.1 and term("g_loss") == pytest.approx(expected, rel=1e-5)


def test_one_batch_is_one_step_of_each_and_both_sides_learn(source):
    model = small_cyclegan()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit(model, datamodule(source, render_b=ColouredDigits()), batches=3)
    assert trainer.global_step == 6 and model.generator_steps == 3
    for part in ("generators.AB", "generators.BA", "discriminators.A", "discriminators.B"):
        name, weight = next(model.get_submodule(part).named_parameters())
        assert not torch.equal(before[f"{part}.{name}"], weight), part
    assert all(p.requires_grad for p in model.parameters())  # the frozen side is unfrozen again
    assert {"val/cycle_aba", "val/cycle_bab", "train/d_loss_epoch", "train/g_adv_ab_epoch"} <= set(
        trainer.callback_metrics)  # fmt: skip
    assert len(model.pools["A"]) == len(model.pools["B"]) == 12  # 3 batches of 4 fakes, below 50


def test_pools_are_checkpointed(source):
    model = small_cyclegan()
    fit(model, datamodule(source, render_b=ColouredDigits()), batches=2)
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint[POOLS_KEY]["B"]["images"].shape == (8, 3, 8, 8)
    resumed = small_cyclegan()
    resumed.on_load_checkpoint(checkpoint)
    assert torch.equal(resumed.pools["B"].images[:8], model.pools["B"].images[:8])


def test_identity_loss_needs_matching_channels():
    with pytest.raises(ValueError, match="A has 1 and B 3 .*; set --model.init_args.identity_weight 0"):
        small_cyclegan(identity_weight=0.5)
    model = small_cyclegan(shape_b=(1, 8, 8), identity_weight=0.5)
    assert model.hparams.identity_weight == 0.5


def check_translator(model: Translator) -> None:
    """The translator's contract (every translator experiment's model is held to it, tests/test_family_contract.py):
    images of the source domain's shape in, of the other's out, in [-1, 1], without gradients; the same images
    whatever the batch (each translated on its own) and the mode the module was left in, which is restored."""
    torch.manual_seed(0)
    for direction, source, target in (("AB", model.shape_a, model.shape_b), ("BA", model.shape_b, model.shape_a)):
        x = torch.rand(5, *source) * 2 - 1  # (5, *source)
        reference = model.translate(x, direction)
        assert reference.shape == (5, *target) and not reference.requires_grad and reference.abs().max() <= 1
        alone = torch.cat([model.translate(x[i : i + 1], direction) for i in range(5)])
        assert torch.allclose(alone, reference, atol=1e-5), f"{direction}: depends on the batch"
        for mode in (True, False):
            model.train(mode)
            assert torch.equal(model.translate(x, direction), reference), f"{direction} after train({mode})"
            assert all(m.training == mode for m in model.modules())


def test_translate_is_a_capability_not_sampling():
    model = small_cyclegan()
    assert isinstance(model, Translator) and not isinstance(model, Generative)
    check_translator(model)
    a = torch.rand(5, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="direction must be AB .* or BA .*, got 'AA'"):
        model.translate(a, "AA")
    with pytest.raises(ValueError, match=r"translate BA takes images of domain B \(N, 3, 8, 8\); got shape"):
        model.translate(a, "BA")
