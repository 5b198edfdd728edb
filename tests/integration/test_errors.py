"""Bad input through the ``genlit`` command: one clear error line that names the fix, nothing half-written.

Each case runs ``genlit`` in-process and checks the exit code, that stderr holds the error on ONE line
(the ``genlit: error:`` prefix and the GENLIT_DEBUG hint on the same line) with the fix in it, that no
Python traceback is shown, and that no output (.npz, .png, temp file, checkpoint) was left behind.
"""

import random
from pathlib import Path

import pytest
import torch

from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import FAST, error_line, fit, mnist_args

PREFIX = "genlit: error: "
HINT = "(set GENLIT_DEBUG=1 for the traceback)"


def genlit_error(capsys, argv: list[str]) -> str:
    """Run ``genlit argv``; expect exit 2 and exactly one genlit error line without traceback; return it."""
    capsys.readouterr()  # drop what earlier steps printed
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, err
    assert lines[0].endswith((HINT, "(see --help)")), err  # the whole message sits on the prefix's line
    return lines[0]


def parse_error(capsys, argv: list[str]) -> str:
    """Run ``genlit argv``; expect a parse error condensed to one line (exit 2, no traceback); return it."""
    return error_line(capsys, *argv)


def fit_args(config: str, root: Path, *overrides: str) -> list[str]:
    """``genlit fit`` arguments for a config under experiments/, run under ``root``."""
    return ["fit", "--config", str(EXPERIMENTS / config), "--trainer.default_root_dir", str(root), *FAST, *overrides]


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (none when it does not exist)."""
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --------------------------------------------------------------------------------------------------- fit
def test_unknown_loss_lists_the_allowed_losses(capsys, tmp_path):
    err = parse_error(capsys, fit_args("gan/toy_ring8.yaml", tmp_path, "--model.init_args.loss", "foo"))
    assert err.startswith("genlit: error: --model.loss: ") and "Got value: foo" in err, err
    assert all(name in err for name in ("non_saturating", "hinge", "wasserstein", "least_squares"))
    assert files_under(tmp_path) == []


def test_unknown_option_is_named(capsys, tmp_path):
    err = parse_error(capsys, fit_args("gan/toy_ring8.yaml", tmp_path, "--model.init_args.nonsense", "1"))
    assert err.startswith("genlit: error: --model: Option 'nonsense' is not accepted"), err
    assert "--help" in err  # and where to look up the accepted ones
    assert files_under(tmp_path) == []


def test_missing_dataset_path_names_the_option(capsys, tmp_path):
    missing = tmp_path / "no_such_mnist"
    root = tmp_path / "runs"
    line = genlit_error(capsys, fit_args("gan/dcgan_mnist.yaml", root, "--data.init_args.dataset", str(missing)))
    assert f"'{missing}' does not exist" in line
    assert "--data.dataset" in line
    assert "'ylecun/mnist'" in line  # the example Hub id keeps both its quotes
    assert not [p for p in files_under(root) if p.suffix == ".ckpt"]  # no checkpoint from a failed setup
    assert files_under(root) == []


def test_missing_image_column_names_the_option(capsys, tmp_path, mnist_dir):
    root = tmp_path / "runs"
    args = fit_args("gan/dcgan_mnist.yaml", root, *mnist_args(mnist_dir), "--data.init_args.image_column", "pixels")
    line = genlit_error(capsys, args)
    assert "'pixels'" in line and "--data.image_column" in line
    assert "columns: image, label" in line  # what the dataset does have
    assert not [p for p in files_under(root) if p.suffix == ".ckpt"]


def test_image_size_the_nets_cannot_take(capsys, tmp_path, mnist_dir):
    root = tmp_path / "runs"
    args = fit_args("gan/dcgan_mnist.yaml", root, *mnist_args(mnist_dir), "--data.init_args.image_size", "30")
    line = genlit_error(capsys, args)
    assert "30x30" in line and "28, 32, 64" in line
    assert "Union" not in line and "Namespace" not in line  # the genlit message, not jsonargparse's wrapper
    assert not [p for p in files_under(root) if p.suffix == ".ckpt"]


# ------------------------------------------------------------------------------------------------ sample
@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory) -> Path:
    """A real genlit checkpoint (unconditional 2-D toy GAN) from a 4-step fit."""
    root = tmp_path_factory.mktemp("toy")
    run = fit("gan/toy_ring8.yaml", root, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0")
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory, toy_ckpt) -> Path:
    """A folder of files that are not usable genlit checkpoints."""
    folder = tmp_path_factory.mktemp("bad_ckpts")
    torch.save({"state_dict": {}, "hyper_parameters": {}}, folder / "not_genlit.ckpt")
    boring = {"_class_path": "lightning.pytorch.demos.boring_classes.BoringModel"}
    torch.save({"state_dict": {}, "hyper_parameters": boring}, folder / "no_sample.ckpt")
    gone = {"_class_path": "genlit.families.no_such_family.Model"}
    torch.save({"state_dict": {}, "hyper_parameters": gone}, folder / "unimportable.ckpt")
    torch.save([1, 2, 3], folder / "not_a_dict.ckpt")
    (folder / "random.ckpt").write_bytes(random.Random(0).randbytes(4096))
    (folder / "empty.ckpt").write_bytes(b"")
    real = toy_ckpt.read_bytes()
    (folder / "truncated.ckpt").write_bytes(real[: len(real) // 2])
    return folder


BAD_CHECKPOINTS = {
    "not_genlit": ("does not record its model class", "not written by `genlit fit`", "load_from_checkpoint"),
    "no_sample": ("holds a BoringModel", "no sample()", "pass a checkpoint of a generative family"),
    "unimportable": ("genlit.families.no_such_family.Model", "cannot be imported"),
    "not_a_dict": ("not a Lightning checkpoint", "pass a genlit .ckpt file"),
    "random": ("not a readable checkpoint", "corrupt or truncated"),
    "empty": ("not a readable checkpoint", "corrupt or truncated"),
    "truncated": ("not a readable checkpoint", "corrupt or truncated"),
}


def sample_args(ckpt: Path, out_dir: Path, *extra: str, out: str = "samples.npz") -> list[str]:
    return ["sample", "--ckpt", str(ckpt), "--num", "8", "--out", str(out_dir / out), *extra]


def assert_nothing_written(out_dir: Path) -> None:
    """No .npz, no .png, no temp file: the output folder is absent or empty."""
    assert files_under(out_dir) == []


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_sample_rejects_bad_checkpoint(capsys, tmp_path, bad_ckpts, name):
    ckpt = bad_ckpts / f"{name}.ckpt"
    line = genlit_error(capsys, sample_args(ckpt, tmp_path / "out"))
    assert str(ckpt) in line
    for phrase in BAD_CHECKPOINTS[name]:
        assert phrase in line
    assert_nothing_written(tmp_path / "out")


def test_sample_missing_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "runs" / "last.ckpt"
    line = genlit_error(capsys, sample_args(ckpt, tmp_path / "out"))
    assert f"checkpoint {ckpt} does not exist" in line and "pass the path of a .ckpt file" in line
    assert_nothing_written(tmp_path / "out")


def test_sample_out_must_be_npz(capsys, tmp_path, toy_ckpt):
    line = genlit_error(capsys, sample_args(toy_ckpt, tmp_path / "out", out="samples.png"))
    assert "--out must end in .npz" in line and "samples.png" in line
    assert_nothing_written(tmp_path / "out")


def test_sample_label_on_unconditional_model(capsys, tmp_path, toy_ckpt):
    line = genlit_error(capsys, sample_args(toy_ckpt, tmp_path / "out", "--label", "3"))
    assert "--label is only for class-conditional models" in line and "unconditional" in line
    assert_nothing_written(tmp_path / "out")


def test_sample_num_must_be_positive(capsys, tmp_path, toy_ckpt):
    args = sample_args(toy_ckpt, tmp_path / "out")
    args[args.index("--num") + 1] = "0"
    line = genlit_error(capsys, args)
    assert "--num: must be an integer >= 1, got 0" in line
    assert_nothing_written(tmp_path / "out")


def test_sample_devices_must_be_positive(capsys, tmp_path, toy_ckpt):
    line = genlit_error(capsys, [*sample_args(toy_ckpt, tmp_path / "out"), "--devices", "0"])
    assert "--devices: must be an integer >= 1" in line
    assert_nothing_written(tmp_path / "out")


def test_debug_env_shows_the_original_error(monkeypatch, tmp_path, toy_ckpt):
    monkeypatch.setenv("GENLIT_DEBUG", "1")
    with pytest.raises(ValueError, match="--out must end in .npz"):
        main(sample_args(toy_ckpt, tmp_path / "out", out="samples.png"))
