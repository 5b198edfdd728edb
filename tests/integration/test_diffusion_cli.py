"""The diffusion family end to end through ``genlit``: fit, test (the bound), sample with every option."""

import numpy as np
import pytest

from genlit.cli import main
from tests.integration.helpers import fit, mnist_args

# a small U-Net and a few steps: the point is the plumbing, not the samples
FEW = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "16"]
SMALL = ["--model.init_args.net.init_args.channels", "8", "--model.init_args.net.init_args.groups", "4"]
FAST_SAMPLING = [
    "--model.init_args.sampler.init_args.num_steps",
    "2",
    "--model.init_args.schedule.init_args.num_steps",
    "50",
]


@pytest.fixture(scope="module")
def cfg_run(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("cfg")
    return fit("diffusion/cfg_mnist.yaml", root, *mnist_args(mnist_dir), *FEW, *SMALL, *FAST_SAMPLING)


def sample(run, out, *options, num="4"):
    main(["sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", num, "--out", str(out), *options])
    return np.load(out)


def test_fit_writes_a_checkpoint_and_a_sample_grid(cfg_run):
    assert (cfg_run / "checkpoints" / "last.ckpt").is_file()
    assert list((cfg_run / "samples").glob("*.png"))


@pytest.mark.parametrize(
    "options",
    [
        [
            "--sampler",
            "DDIMSampler",
            "--sampler.num_steps",
            "3",
            "--sampler.eta",
            "0.5",
            "--guidance-scale",
            "2",
            "--label",
            "7",
        ],  # fmt: skip
        ["--sampler", "genlit.diffusion.DDPMSampler", "--sampler.num_steps", "2", "--no-ema"],
        ["--sampler", "HeunSampler", "--sampler.num_steps", "2", "--sampler.churn", "5", "--label", "7"],
        ["--sampler", "DPMSolverSampler", "--sampler.num_steps", "3"],
        [],
    ],
    ids=["ddim-guided", "ddpm-raw-net", "heun-on-ddpm", "dpm-solver-on-ddpm", "model-defaults"],
)
def test_sample_takes_the_diffusion_options(cfg_run, tmp_path, options, capsys):
    arrays = sample(cfg_run, tmp_path / "s.npz", *options)
    assert arrays["arr_0"].shape == (4, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    if "--label" in options:
        assert (arrays["arr_1"] == 7).all()
    assert "denoising" in capsys.readouterr().err  # the progress bar over steps


def test_samples_do_not_depend_on_the_batch_size(cfg_run, tmp_path):
    """Sample i's noise depends only on (seed, i): a stochastic sampler gives the same samples in any batches."""
    ddpm = ["--sampler", "DDPMSampler"]  # ancestral: fresh noise at every one of the 50 steps
    small = sample(cfg_run, tmp_path / "b3.npz", *ddpm, "--batch-size", "3", num="16")
    whole = sample(cfg_run, tmp_path / "b16.npz", *ddpm, "--batch-size", "16", num="16")
    np.testing.assert_array_equal(small["arr_0"], whole["arr_0"])
    np.testing.assert_array_equal(small["arr_1"], np.arange(16) % 10)
    other_seed = sample(cfg_run, tmp_path / "s1.npz", *ddpm, "--seed", "1", num="16")
    assert (other_seed["arr_0"] != whole["arr_0"]).mean() > 0.5


def test_help_lists_the_samplers(cfg_run, capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(cfg_run / "checkpoints" / "last.ckpt"), "--help"])
    out = capsys.readouterr().out
    assert "Diffusion options" in out and "DDPMSampler" in out and "DDIMSampler" in out and "--guidance-scale" in out


def test_test_reports_the_bound_in_bits_per_dim(tmp_path, mnist_dir, capsys):
    run = fit("diffusion/ddpm_cosine_v_mnist.yaml", tmp_path / "runs", *mnist_args(mnist_dir), *FEW, *SMALL)
    args = ["test", "--config", str(run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path / "test")]
    args += ["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--model.init_args.nll_timesteps", "2"]
    args += ["--trainer.limit_test_batches", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(args)
    out = capsys.readouterr().out
    for key in ("test/loss", "test/nll", "test/nll_bits_per_dim"):
        assert key in out, out


@pytest.mark.parametrize(
    "options, message",
    [
        (["--sampler", "euler"], "--sampler: euler is not an importable Sampler; use one of"),
        (["--eta", "0.5"], "unrecognized arguments: --eta 0.5; the sampling options of this Diffusion checkpoint"),
        (["--sampler", "DDIMSampler", "--sampler.eta", "-1"], "DDIM eta must be >= 0, got -1.0"),
        (["--sampler", "DDIMSampler", "--sampler.steps", "5"], "steps"),
    ],
)
def test_bad_sample_options_are_clear_errors(cfg_run, tmp_path, options, message, capsys):
    with pytest.raises(SystemExit):
        sample(cfg_run, tmp_path / "s.npz", *options)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.init_args.prediction", "score"], "--model.prediction: Expected a typing.Literal['eps', 'x0', 'v']"),
        (
            ["--model.init_args.schedule", "genlit.diffusion.QuadraticSchedule"],
            "is not an importable NoiseSchedule; use",
        ),
        (["--model.init_args.sampler", "genlit.diffusion.LMSSampler"], "is not an importable Sampler; use one of"),
    ],
)
def test_unknown_schedule_sampler_or_target_is_a_clear_error(mnist_dir, tmp_path, override, message, capsys):
    with pytest.raises(SystemExit):
        fit("diffusion/ddpm_mnist.yaml", tmp_path, *mnist_args(mnist_dir), *override)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error: ")]
    assert len(lines) == 1 and message in lines[0], lines


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("edm")
    steps = ["--model.init_args.sampler.init_args.num_steps", "2"]
    return fit("diffusion/edm_mnist.yaml", root, *mnist_args(mnist_dir), *FEW, *SMALL, *steps)


@pytest.mark.parametrize(
    "options",
    [[], ["--sampler", "EulerSampler", "--sampler.num_steps", "3"], ["--sampler", "DPMSolverSampler"]],
    ids=["heun-default", "euler", "dpm-solver"],
)
def test_edm_fits_and_samples(edm_run, tmp_path, options):
    arrays = sample(edm_run, tmp_path / "s.npz", *options)
    assert arrays["arr_0"].shape == (4, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    assert (edm_run / "checkpoints" / "last.ckpt").is_file()


def test_edm_with_a_discrete_sampler_is_one_clear_line(edm_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample(edm_run, tmp_path / "s.npz", "--sampler", "DDIMSampler", "--sampler.num_steps", "5")
    err = capsys.readouterr().err
    assert "DDIMSampler runs on discrete timesteps; a model with EDMSchedule samples with EulerSampler" in err
    assert not (tmp_path / "s.npz").exists()
