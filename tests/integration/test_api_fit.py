"""genlit.fit from Python: the command line's run (folder, config.yaml, checkpoints), returned as an object;
``ckpt_path="last"`` continues it in the same folder; genlit.load reads it back."""

import lightning as L

import genlit


class CountBatches(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def test_fit_returns_the_run_and_resumes_it_in_the_same_folder(tmp_path):
    trainer = {**QUIET, "max_steps": 8, "default_root_dir": str(tmp_path), "val_check_interval": 4}
    counter = CountBatches()
    run = genlit.fit("experiments/gan/toy_ring8.yaml", trainer=trainer, data={"num_train": 640}, callbacks=[counter])
    assert run.trainer.global_step == 8 and counter.batches == 4  # D + G steps; a callback object from Python
    assert run.run_dir.parent == tmp_path
    assert (run.run_dir / "config.yaml").is_file() and run.checkpoint.name == "last.ckpt"
    assert "train/d_loss_epoch" in run.metrics or any(k.startswith("val/") for k in run.metrics)

    more = genlit.fit("gan/toy_ring8.yaml", trainer={**trainer, "max_steps": 12}, data={"num_train": 640},
                      ckpt_path="last")  # fmt: skip
    assert more.run_dir == run.run_dir and more.trainer.global_step == 12
    model = genlit.load(run.run_dir)
    assert type(model).__name__ == "GAN" and not model.training
    assert model.sample(5).shape == (5, 2)
