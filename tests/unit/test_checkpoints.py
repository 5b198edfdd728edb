"""Checkpoints cannot run code: genlit reads them with weights_only=True and an allow-list of what it writes."""

import os
from functools import partial

import lightning as L
import pytest
import torch

from genlit.checkpoints import allowed_global, load_family, read_checkpoint
from genlit.cli import main
from genlit.families.gan import GAN
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from tests.conftest import EXPERIMENTS


class Payload:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path):
    """A .ckpt that looks like genlit's but whose pickle would create ``pwned`` when loaded."""
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.ckpt"
    hparams = {"_class_path": "genlit.families.gan.GAN", "payload": Payload(marker)}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path, marker


def test_a_crafted_checkpoint_is_refused_by_name_and_never_runs(crafted):
    path, marker = crafted
    with pytest.raises(ValueError, match=r"is refused: its pickle names posix\.system"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="is refused"):
        load_family(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["sample", "evaluate", "fit"])
def test_every_command_refuses_it_in_one_line(crafted, command, tmp_path, capsys):
    path, marker = crafted
    argv = {
        "sample": ["sample", "--ckpt", str(path), "--num", "2", "--out", str(tmp_path / "s.npz")],
        "evaluate": ["evaluate", "--samples", str(tmp_path / "s.npz"), "--data", "x", "--extractor", str(path)],
        "fit": ["fit", "--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml"), "--ckpt_path", str(path),
                "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger", "false"],
    }[command]  # fmt: skip
    if command == "evaluate":
        import numpy as np

        np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 28, 28, 1), np.uint8))
    with pytest.raises(SystemExit):
        main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error: ")]
    assert len(lines) == 1 and "is refused: its pickle names posix.system" in lines[0]
    assert not marker.exists()


def test_what_genlit_writes_is_allowed_and_nothing_else():
    for name in ("functools.partial", "genlit.nets.mlp.MLPGenerator", "torch.optim.adam.Adam",
                 "genlit.diffusion.samplers.ddim.DDIMSampler", "pathlib.PosixPath"):  # fmt: skip
        assert allowed_global(name), name
    for name in ("posix.system", "builtins.eval", "genlit.checkpoints.load_family", "torch.load", "genlit.nope.X"):
        assert not allowed_global(name), name


def test_a_module_built_in_python_reads_back(tmp_path):
    """Its hyperparameters hold net factories (partials of genlit classes) and optimizer classes."""
    nets = partial(MLPGenerator, latent_dim=4, hidden=8), partial(MLPDiscriminator, hidden=8)
    model = GAN(*nets, data_shape=(2,), g_optimizer=torch.optim.Adam)
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    checkpoint = read_checkpoint(tmp_path / "m.ckpt")
    assert checkpoint["hyper_parameters"]["generator"].func is MLPGenerator
