"""CycleGAN end to end through the ``genlit`` command on the offline MNIST copy: fit a few steps of the experiment
(tiny nets), resume, translate a file both ways, DDP on two CPU ranks, and bad input as one clear line."""

import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from genlit.cli import main
from genlit.commands.runs import newest_checkpoint
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import FAST, fit, fit_on_two_ranks, mnist_args
from tests.integration.helpers import error_line as one_error_line

EXPERIMENT = EXPERIMENTS / "gan" / "cyclegan_mnist_domains.yaml"
TINY = ["--model.init_args.generator.init_args.width", "4", "--model.init_args.generator.init_args.num_blocks", "1",
        "--model.init_args.discriminator.init_args.width", "4", "--data.init_args.batch_size", "8",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]  # fmt: skip


class SaveCycleGANWeights(L.Callback):
    """DDP probe: each rank writes ``rank{R}.pt`` with the four nets' state dicts when fit ends."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {"nets": pl_module.state_dict(), "world_size": trainer.world_size}
        torch.save(state, self.dirpath / f"rank{trainer.global_rank}.pt")


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("cyclegan")
    overrides = ["--trainer.max_steps", "8", "--trainer.val_check_interval", "2", *TINY]
    return fit(EXPERIMENT, root, *mnist_args(mnist_dir), *overrides)


def error_line(capsys, *argv: str) -> str:
    """The one line ``genlit`` prints for bad input, the whole message on it (ending in the hint)."""
    line = one_error_line(capsys, *argv)
    assert line.endswith(("(set GENLIT_DEBUG=1 for the traceback)", "(see --help)")), line
    return line


def test_fit_counts_both_steps_and_writes_grids_checkpoint_and_cycle_metrics(run):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8 and int(ckpt["state_dict"]["_generator_steps"]) == 4
    assert ckpt["image_pools"]["A"]["images"].shape == (32, 1, 28, 28)  # 4 batches of 8 fakes of A
    assert ckpt["image_pools"]["B"]["images"].shape == (32, 3, 28, 28)
    assert {p.name for p in (run / "samples").glob("*.png")} == {"translate_AB_step_0000008.png",
                                                                 "translate_BA_step_0000008.png"}  # fmt: skip
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/cycle_aba", "val/cycle_bab", "train/cycle_aba_epoch", "train/d_loss_epoch"} <= set(header)


def test_translate_a_file_both_ways(run, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    source, coloured, back = tmp_path / "digits.npz", tmp_path / "coloured.npz", tmp_path / "back.npz"
    np.savez(source, images, np.arange(6))
    ckpt = str(run / "checkpoints" / "last.ckpt")
    main(["translate", "--ckpt", ckpt, "--input", str(source), "--direction", "AB", "--out", str(coloured),
          "--batch-size", "4"])  # fmt: skip
    out = np.load(coloured)
    assert out["arr_0"].dtype == np.uint8 and out["arr_0"].shape == (6, 28, 28, 3)
    np.testing.assert_array_equal(out["arr_1"], np.arange(6))  # labels pass through
    assert coloured.with_suffix(".png").is_file()
    main(["translate", "--ckpt", ckpt, "--input", str(coloured), "--direction", "BA", "--out", str(back)])
    assert np.load(back)["arr_0"].shape == (6, 28, 28, 1)
    one_at_a_time = tmp_path / "single.npz"
    main(["translate", "--ckpt", ckpt, "--input", str(source), "--direction", "AB", "--out", str(one_at_a_time),
          "--batch-size", "1"])  # fmt: skip
    difference = np.abs(np.load(one_at_a_time)["arr_0"].astype(int) - out["arr_0"].astype(int))
    assert difference.max() <= 1  # each image is translated on its own (instance norm): batching changes nothing


def test_translate_bad_input_is_one_clear_line(run, tmp_path, capsys):
    ckpt = str(run / "checkpoints" / "last.ckpt")
    grey = tmp_path / "grey.npz"
    np.savez(grey, np.zeros((2, 28, 28, 1), np.uint8))
    out = tmp_path / "out.npz"
    line = error_line(capsys, "translate", "--ckpt", ckpt, "--input", str(grey), "--direction", "XY", "--out", str(out))
    assert "--direction" in line and "AB" in line and "BA" in line
    line = error_line(capsys, "translate", "--ckpt", ckpt, "--input", str(grey), "--direction", "BA", "--out", str(out))
    assert "(28, 28, 1) (H, W, C), but --direction BA translates domain B images (28, 28, 3)" in line
    line = error_line(capsys, "translate", "--ckpt", ckpt, "--input", str(tmp_path / "none.npz"), "--direction", "AB",
                      "--out", str(out))  # fmt: skip
    assert "none.npz does not exist" in line
    assert not out.exists() and not list(tmp_path.glob(".out.npz*"))  # nothing half-written
    assert "which has no sample()" in error_line(capsys, "sample", "--ckpt", ckpt, "--num", "2", "--out", str(out))


def test_bad_options_at_fit_are_one_clear_line(mnist_dir, tmp_path, capsys):
    base = ["fit", "--config", str(EXPERIMENT), "--trainer.default_root_dir", str(tmp_path), *FAST]
    line = error_line(capsys, *base, "--data.init_args.dataset", "null", "--data.init_args.domain_a", str(mnist_dir))
    assert "has no domain B: set --data.domain_b" in line
    line = error_line(capsys, *base, *mnist_args(mnist_dir), "--model.init_args.identity_weight", "0.5")
    assert "A has 1 and B 3" in line and "set --model.init_args.identity_weight 0" in line


def test_resume_continues_the_run_with_its_pools(run, tmp_path):
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "last.ckpt"
    main(["fit", "--config", str(copy / "config.yaml"), "--trainer.max_steps", "12", "--ckpt_path", str(last), *FAST])
    resumed = torch.load(newest_checkpoint(copy), weights_only=False)  # last-v1.ckpt: the copy moved the folder
    assert resumed["global_step"] == 12 and int(resumed["state_dict"]["_generator_steps"]) == 6
    assert resumed["image_pools"]["A"]["images"].shape[0] == 48  # 32 from the checkpoint, 16 more


@pytest.mark.slow  # 25-60 s on 2 shared cores: two processes start, decode MNIST and train
def test_two_cpu_ranks_end_with_identical_nets(tmp_path, mnist_dir):
    """Each step all-reduces the part it trains (both generators, then both discriminators) under DDP."""
    probe = {"class_path": "tests.integration.test_cyclegan_cli.SaveCycleGANWeights",
             "init_args": {"dirpath": str(tmp_path)}}  # fmt: skip
    config = ["--config", str(EXPERIMENT), *mnist_args(mnist_dir), *TINY, "--trainer.callbacks=[]"]
    ranks = fit_on_two_ranks(tmp_path, config, 6, probe)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for key, value in ranks[0]["nets"].items():
        torch.testing.assert_close(value, ranks[1]["nets"][key], rtol=0, atol=0, msg=f"{key} differs")
    assert int(ranks[0]["nets"]["_generator_steps"]) == 3


def test_an_export_translates_as_its_checkpoint(run, tmp_path):
    from genlit.checkpoints import load_family

    ckpt, out = newest_checkpoint(run), tmp_path / "export"
    main(["export", "--ckpt", str(ckpt), "--out", str(out)])
    model, original = load_family(out, needs="translate").eval(), load_family(ckpt, needs="translate").eval()
    x = torch.rand(3, *original.shape_a, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (3, C, H, W) domain A
    with torch.no_grad():
        assert torch.equal(original.translate(x, "AB"), model.translate(x, "AB"))
