"""A NaN or infinite loss stops the run before it is applied (or skips the step), and no checkpoint is ever
written with non-finite weights."""

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from genlit import GAN, ToyDataModule
from genlit.checkpoints import read_checkpoint
from genlit.families.training import NonFiniteLossError
from genlit.families.vae import VAE
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder


class NaNBatches(L.Callback):
    """Fill the training batches with the given indices with NaN (in place, before the step sees them)."""

    def __init__(self, batches) -> None:
        self.batches = set(batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx in self.batches:
            batch[0].fill_(float("nan"))


def gan(**kwargs) -> GAN:
    nets = partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=16)
    return GAN(*nets, data_shape=(2,), **kwargs)


def vae(**kwargs) -> VAE:
    nets = partial(MLPEncoder, hidden=16), partial(MLPDecoder, hidden=16)
    return VAE(*nets, data_shape=(2,), latent_dim=2, likelihood="gaussian_fixed", **kwargs)


def fit(model, tmp_path, nan_at, batches=8):
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        callbacks=[checkpoints, NaNBatches(nan_at)])  # fmt: skip
    trainer.fit(model, datamodule=ToyDataModule("ring8", batch_size=16, num_train=256, num_val=16))
    return trainer


@pytest.mark.parametrize("make", [gan, vae], ids=["gan-manual", "vae-automatic"])
def test_a_nan_stops_the_run_naming_the_step_and_the_checkpoint_stays_finite(make, tmp_path):
    model = make()
    with pytest.raises(NonFiniteLossError, match=r"^step \d+: non-finite training loss \((d_loss|loss)=nan"):
        fit(model, tmp_path, nan_at=[5])
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before applying it
    state = read_checkpoint(tmp_path / "last.ckpt")["state_dict"]
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("make", [gan, vae], ids=["gan-manual", "vae-automatic"])
def test_skip_counts_and_logs_the_skipped_steps(make, tmp_path):
    model = make(on_nonfinite="skip")
    with pytest.warns(UserWarning, match="non-finite training loss.*step skipped"):
        trainer = fit(model, tmp_path, nan_at=[2, 5])
    assert int(model._nonfinite_skips) == 2
    assert trainer.callback_metrics["train/nonfinite_skips"].item() == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = vae()
    trainer = fit(model, tmp_path, nan_at=[])
    before = (tmp_path / "last.ckpt").read_bytes()
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="weights are no longer finite; the checkpoint is not written"):
        trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == before


def test_the_policy_is_checked():
    with pytest.raises(ValueError, match="on_nonfinite must be 'stop' or 'skip'"):
        vae(on_nonfinite="ignore")
