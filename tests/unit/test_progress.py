"""genlit's default progress bar: throttled redraws, installed by the CLI unless the config says otherwise."""

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from genlit.callbacks.progress import ThrottledProgressBar
from genlit.cli import GenlitCLI
from tests.conftest import EXPERIMENTS


def test_redraws_at_most_refresh_rate_per_second_but_always_at_epoch_edges(monkeypatch):
    draws = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, t, m, o, b, i: draws.append(i))
    bar = ThrottledProgressBar(refresh_rate=1)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=40, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[bar])  # fmt: skip
    trainer.fit(BoringModel())
    assert 0 in draws and 39 in draws  # first and last batch of each epoch
    assert len(draws) <= 6  # 80 fast batches, 1 redraw per second at most besides the edges
    assert bar.val_progress_bar_id is None


def test_a_run_bounded_by_max_steps_is_throttled_to_its_end(monkeypatch):
    # Lightning's total_train_batches is the steps left under max_steps, which shrinks as the run goes
    draws = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, t, m, o, b, i: draws.append(i))
    trainer = L.Trainer(max_steps=60, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[ThrottledProgressBar(refresh_rate=1)])  # fmt: skip
    trainer.fit(BoringModel())  # 64 batches per epoch, stopped at 60
    assert 0 in draws and 59 in draws
    assert len(draws) <= 5


def test_cli_installs_it_unless_the_config_names_a_bar_or_disables_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(EXPERIMENTS / "gan" / "toy_ring8.yaml")]

    def bars(*extra):
        cli = GenlitCLI(args=config + list(extra), run=False)
        return [type(c) for c in cli.trainer.callbacks if isinstance(c, (RichProgressBar, TQDMProgressBar))]

    assert bars() == [ThrottledProgressBar]
    assert bars("--trainer.enable_progress_bar", "false") == []
    tqdm = {"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 5}}
    assert bars("--trainer.callbacks+", str(tqdm).replace("'", '"')) == [TQDMProgressBar]
