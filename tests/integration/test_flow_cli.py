"""The flow family end to end through ``genlit``: fit a tiny Glow, test (the discrete NLL in nats and bits/dim),
sample with a temperature, and a resumed model that keeps its actnorm initialization."""

import math
import re

import numpy as np
import pytest
import torch

from genlit.checkpoints import load_family
from genlit.cli import main
from genlit.nets.flows import ActNorm
from tests.integration.helpers import fit, mnist_args

TINY = ["--model.init_args.net.init_args.steps", "1", "--model.init_args.net.init_args.hidden", "8"]
FEW = ["--trainer.max_steps", "6", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "32"]


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory, mnist_dir):
    return fit("flow/glow_mnist.yaml", tmp_path_factory.mktemp("glow"), *mnist_args(mnist_dir), *TINY, *FEW)


def test_fit_writes_a_checkpoint_with_initialized_actnorms(glow_run):
    ckpt = torch.load(glow_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    flags = [v for k, v in ckpt["state_dict"].items() if k.endswith("initialized")]
    assert len(flags) == 2 and all(bool(flag) for flag in flags)  # one actnorm per step, 2 levels x 1 step
    assert list((glow_run / "samples").glob("*.png"))


def test_test_reports_the_nll_in_nats_and_bits_per_dim(glow_run, tmp_path, capsys):
    args = ["test", "--config", str(glow_run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--ckpt_path", str(glow_run / "checkpoints" / "last.ckpt"), "--trainer.limit_test_batches", "2"]
    args += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(args)
    out = capsys.readouterr().out
    values = {key: float(value) for key, value in re.findall(r"(test/nll\w*)\s*\S\s*([-\d.e+]+)", out)}
    assert set(values) == {"test/nll", "test/nll_bits_per_dim"}, out
    assert values["test/nll_bits_per_dim"] == pytest.approx(values["test/nll"] / (784 * math.log(2)), rel=1e-4)
    assert 0.5 < values["test/nll_bits_per_dim"] < 8.5  # 6 steps of a tiny flow: far from trained, near 8 bits


def test_sample_with_a_temperature(glow_run, tmp_path):
    ckpt = str(glow_run / "checkpoints" / "last.ckpt")
    for name, temperature in (("cool", "0.7"), ("hot", "1.0")):
        main(
            [
                "sample",
                "--ckpt",
                ckpt,
                "--num",
                "4",
                "--out",
                str(tmp_path / f"{name}.npz"),
                "--temperature",
                temperature,
            ]
        )
    cool, hot = (np.load(tmp_path / f"{name}.npz")["arr_0"] for name in ("cool", "hot"))
    assert cool.shape == (4, 28, 28, 1) and cool.dtype == np.uint8
    assert (tmp_path / "cool.png").is_file() and not np.array_equal(cool, hot)


def test_bad_temperature_is_one_error_line(glow_run, tmp_path, capsys):
    ckpt = str(glow_run / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", ckpt, "--num", "2", "--out", str(tmp_path / "x.npz"), "--temperature", "-1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error:")]
    assert len(lines) == 1 and "temperature must be a finite number >= 0" in lines[0]
    assert not (tmp_path / "x.npz").exists()


def test_a_loaded_checkpoint_keeps_its_actnorm_initialization(glow_run, mnist_dir):
    model = load_family(glow_run / "checkpoints" / "last.ckpt").train()
    before = [t.detach().clone() for m in model.modules() if isinstance(m, ActNorm) for t in (m.loc, m.log_scale)]
    with torch.no_grad():
        model.nll(torch.rand(8, 1, 28, 28) * 0.2 - 1)  # a training-mode forward on other data
    after = [t for m in model.modules() if isinstance(m, ActNorm) for t in (m.loc, m.log_scale)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
