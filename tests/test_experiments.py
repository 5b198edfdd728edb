"""Every experiments/**/*.yaml parses and instantiates its model, data and trainer."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer

from genlit.cli import GenlitCLI
from tests.conftest import EXPERIMENTS, autoencoder_checkpoint, code_file, speaker_corpora

CONFIGS = sorted(EXPERIMENTS.rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(EXPERIMENTS)) for c in CONFIGS])
def test_config_instantiates(config, data_dir, mnist_dir, tmp_path, monkeypatch):  # text configs read $GENLIT_DATA_DIR
    monkeypatch.chdir(tmp_path)
    speaker_corpora(config, tmp_path, data_dir)  # the text transfer experiments' corpora
    args = ["--config", str(config)]
    if "ImageDataModule" in config.read_text():
        args += ["--data.init_args.dataset", str(mnist_dir)]  # offline copy instead of the Hub id
    if "TokenSequenceDataModule" in config.read_text():  # a prior over codes: a code file as genlit encode writes
        args += ["--data.init_args.source", str(code_file(tmp_path))]
    if "genlit.families.latent_diffusion." in config.read_text():  # a frozen first stage given by path
        args += ["--model.init_args.autoencoder", str(autoencoder_checkpoint(tmp_path))]
    cli = GenlitCLI(args=args, run=False)
    assert isinstance(cli.model, torch.nn.Module)
    if hasattr(cli.datamodule, "vocab_size"):  # text: vocabulary and context come from the DataModule
        assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size
        assert cli.model.hparams.block_size == cli.datamodule.block_size
    elif hasattr(cli.datamodule, "shape_a"):  # unpaired translation: each domain's shape
        assert tuple(cli.model.hparams.shape_a) == cli.datamodule.shape_a
        assert tuple(cli.model.hparams.shape_b) == cli.datamodule.shape_b
    else:
        assert tuple(cli.model.hparams.data_shape) == tuple(cli.datamodule.data_shape)
        assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    timed = any(isinstance(c, Timer) for c in cli.trainer.callbacks)  # max_time
    assert cli.trainer.max_steps > 0 or cli.trainer.max_epochs or timed
    for checkpoint in cli.trainer.callbacks:
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint._every_n_epochs > 1 and checkpoint.monitor:
            # A validation metric logged every n epochs is judged after validation: judged at the end of a
            # training epoch that max_steps or max_time cut short (no validation ran), the key is missing, and
            # Lightning stops the run with an error.
            assert checkpoint._save_on_train_epoch_end is False, f"{checkpoint.monitor}: save_on_train_epoch_end"


def test_experiment_set_is_complete():
    names = {c.stem for c in (EXPERIMENTS / "gan").glob("*.yaml")}
    assert {"toy_ring8", "toy_grid25", "dcgan_mnist", "wgan_gp_mnist", "sngan_hinge_mnist"} <= names
    assert {"ddpm_mnist", "ddpm_cosine_v_mnist", "cfg_mnist"} <= {
        c.stem for c in (EXPERIMENTS / "diffusion").glob("*.yaml")
    }
    assert {"gpt_shakespeare_char_cpu", "gpt_shakespeare_char", "gpt_shakespeare_bpe", "charrnn_shakespeare"} <= {
        c.stem for c in (EXPERIMENTS / "autoregressive").glob("*.yaml")
    }
