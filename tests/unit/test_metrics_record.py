"""The metrics record of a run folder (metrics.csv): written into the run folder, continued by a resumed run,
read back; and the figures drawn from it (panels from the family's declaration, --metrics, errors)."""

import pandas as pd
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from genlit.cli import with_record
from genlit.commands.plot import NothingToPlot, plot_runs
from genlit.commands.record import RECORD_FILE, MetricsRecord, read_metrics


def launch(run_dir, steps, resuming=False, val_every=5, extra=None):
    """Log what a short training launch logs (train every step, val every ``val_every``), then stop without
    finalizing (as a killed run: the record is written call by call)."""
    record = MetricsRecord(run_dir, resuming=resuming)
    record.log_hyperparams({"lr": 0.1})
    for step in steps:
        record.log_metrics({"train/loss": 10.0 - step / 10, "epoch": 0}, step=step)
        if step % val_every == val_every - 1:
            record.log_metrics({"val/loss": 9.0 - step / 10, **(extra or {}), "epoch": 0}, step=step)
    return record


def test_the_record_is_the_run_folder_own_csv(tmp_path):
    launch(tmp_path, range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no hparams.yaml, no version folder
    frame = read_metrics(tmp_path)
    assert frame["train/loss"].notna().sum() == 10 and frame["val/loss"].dropna().tolist() == [8.6, 8.1]
    assert frame["step"].is_monotonic_increasing


def test_a_resumed_run_continues_its_record_and_replaces_what_it_redoes(tmp_path):
    launch(tmp_path, range(13))  # killed at step 12; its last checkpoint was at step 7
    launch(tmp_path, range(8, 20), resuming=True, extra={"val/fid": 3.0})  # a new column, too
    frame = read_metrics(tmp_path)
    train = frame.dropna(subset=["train/loss"])
    assert train["step"].tolist() == list(range(20))  # one row per step: steps 8-12 are the resumed launch's
    assert frame.dropna(subset=["val/loss"])["step"].tolist() == [4, 9, 14, 19]
    assert frame.dropna(subset=["val/fid"])["step"].tolist() == [9, 14, 19]  # older rows keep their values


def test_a_fresh_start_in_the_same_folder_starts_a_new_record(tmp_path):
    launch(tmp_path, range(10))
    launch(tmp_path, range(3))
    assert read_metrics(tmp_path)["step"].max() == 2


def test_the_record_takes_the_place_of_a_csv_logger_writing_the_same_file(tmp_path):
    record = MetricsRecord(tmp_path)
    same = CSVLogger(tmp_path, name="", version="")
    elsewhere, board = CSVLogger(tmp_path / "csv"), TensorBoardLogger(tmp_path)
    assert with_record([board, same], record) == [board, record]
    assert with_record([board, elsewhere], record) == [board, elsewhere, record]
    assert with_record([], record) == [record]


def test_reading_a_folder_without_a_record_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        read_metrics(tmp_path / "nope")
    launch(tmp_path / "20250101-000000", range(3))
    with pytest.raises(FileNotFoundError, match=r"has no metrics record \(metrics.csv\); it holds runs \(2025"):
        read_metrics(tmp_path)


def gan_run(path, shift=0.0):
    """A run folder of a GAN (its config.yaml) with a small record."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("model:\n  class_path: genlit.families.gan.GAN\n")
    record = MetricsRecord(path)
    for step in range(0, 40, 2):
        values = {"train/d_loss": 1.3 - step / 100 + shift, "train/g_loss": 0.7 + step / 100, "train/d_real": 0.1}
        record.log_metrics({**values, "train/d_fake": -0.1, "train/d_grad_norm": 1.0}, step=step)
    record.log_metrics({"val/d_loss": 1.0, "val/modes_covered": 3.0}, step=39)
    return path


def panel_titles(figure):
    return [ax.get_title() for ax in figure.axes if ax.get_visible()]


def test_the_family_declares_its_panels_and_several_runs_share_them(tmp_path):
    one, two = gan_run(tmp_path / "toy" / "a"), gan_run(tmp_path / "toy" / "b", shift=0.2)
    out = tmp_path / "compare.png"
    figure = plot_runs([one, two], out)
    titles = ["G and D losses", "D(x) and D(G(z)): D's mean output", "modes covered (toy data)"]
    assert panel_titles(figure) == titles  # no FID panel: not measured; no grad norms: not a GAN panel
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["toy/a", "toy/b"]
    assert figure.get_suptitle() == "2 runs (GAN)"
    assert plot_runs(one).get_suptitle() == "toy/a (GAN)"


def test_metrics_names_other_panels_and_unknown_ones_are_named(tmp_path):
    run = gan_run(tmp_path / "a")
    figure = plot_runs(run, metrics=["d_grad_norm", "val/d_loss"])
    assert panel_titles(figure) == ["d_grad_norm", "val/d_loss"]
    with pytest.raises(NothingToPlot, match="--metrics fid: not in the records; they hold train/d_fake, "):
        plot_runs(run, metrics=["fid"])
    with pytest.raises(ValueError, match=r"x.nope: cannot write a .nope figure; name a file ending in one of .*\.png"):
        plot_runs(run, tmp_path / "x.nope")


def test_a_module_genlit_does_not_know_gets_a_panel_per_metric(tmp_path):
    run = gan_run(tmp_path / "a")
    (run / "config.yaml").write_text("model:\n  class_path: my_package.MyModel\n")
    titles = panel_titles(plot_runs(run))
    assert titles == ["d_fake", "d_grad_norm", "d_loss", "d_real", "g_loss", "modes_covered"]
    assert isinstance(read_metrics(run), pd.DataFrame)
