"""Training curves as files: ``genlit fit`` leaves metrics.csv and metrics.png in the run folder (also without a
logger), and ``genlit plot`` draws several runs on shared axes, with one error line for a folder without a record."""

import shutil
from pathlib import Path

import pytest

from genlit.cli import main
from genlit.commands.record import read_metrics
from tests.integration.helpers import fit

SHORT = ["--trainer.max_steps", "40", "--trainer.val_check_interval", "10", "--trainer.log_every_n_steps", "4",
         "--trainer.logger", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A short toy GAN run, and a copy of its folder as a second run (what a comparison reads is the folder)."""
    root = tmp_path_factory.mktemp("toy")
    first = fit("gan/toy_ring8.yaml", root, *SHORT)
    return first, Path(shutil.copytree(first, root / "copy"))


def test_fit_leaves_the_record_and_its_curves_without_a_logger(two_runs):
    run, _ = two_runs
    assert (run / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    frame = read_metrics(run)
    assert {"train/d_loss", "train/g_loss", "train/d_real", "val/modes_covered"} <= set(frame.columns)
    assert frame["step"].max() == 20  # the loggers' step: batches (40 optimizer steps: D and G)


def test_plot_compares_runs_in_one_figure(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["plot", *map(str, two_runs)])
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote compare.png" in capsys.readouterr().out
    main(["plot", str(two_runs[0]), "--metrics", "d_grad_norm", "--out", str(tmp_path / "norms.pdf")])
    assert (tmp_path / "norms.pdf").read_bytes()[:4] == b"%PDF"


def test_a_folder_without_a_record_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("genlit: error: ") and "has no metrics record (metrics.csv)" in line
