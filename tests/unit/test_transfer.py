"""Fine-tuning from weights (genlit.families.transfer): every module takes init_from / init_strict / init_key_map /
freeze; init_from copies every matching tensor and nothing else, restarts the EMA and never touches a resumed run;
frozen parameters stay put and get no optimizer state; bad patterns and shapes are one clear line."""

import fnmatch
import inspect
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlit import ToyDataModule
from genlit.families.acgan import ACGAN
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.classifier import Classifier
from genlit.families.cyclegan import CycleGAN
from genlit.families.diffusion import Diffusion
from genlit.families.flow import Flow
from genlit.families.gan import GAN
from genlit.families.infogan import InfoGAN
from genlit.families.masked_lm import MaskedLM
from genlit.families.pixelcnn import PixelCNN
from genlit.families.transfer import TRANSFER_PARAMETERS, abbreviated, initialize_from, match_weights
from genlit.families.vae import VAE
from genlit.families.vqvae import VQVAE
from genlit.nets.gpt import GPT
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder

OPTIONS = [p.name for p in TRANSFER_PARAMETERS]


def gan(d_hidden: int = 16, **kwargs) -> GAN:
    nets = partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=d_hidden)
    return GAN(*nets, data_shape=(2,), ema_decay=0.9, **kwargs)


def vae(**kwargs) -> VAE:
    nets = partial(MLPEncoder, hidden=16), partial(MLPDecoder, hidden=16)
    return VAE(*nets, data_shape=(2,), latent_dim=2, likelihood="gaussian_fixed", **kwargs)


def lm(**kwargs) -> AutoregressiveLM:
    return AutoregressiveLM(partial(GPT, n_layer=2, n_head=2, n_embd=16), 11, 8, **kwargs)


def perturbed(model, seed: int):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def save(model, path, extra=None, rename=None):
    """A checkpoint of ``model``'s state dict (plus ``extra`` tensors, names renamed by ``rename``) as genlit reads."""
    state = {(rename(k) if rename else k): v for k, v in model.state_dict().items()} | (extra or {})
    torch.save({"state_dict": state, "hyper_parameters": {}}, path)
    return path


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trainer(**kwargs) -> L.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
               "enable_model_summary": False, "limit_val_batches": 0}  # fmt: skip
    return L.Trainer(**(options | kwargs))


def toy_data() -> ToyDataModule:
    return ToyDataModule("ring8", batch_size=16, num_train=256, num_val=16)


# ------------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("family", [GAN, ACGAN, InfoGAN, VAE, Diffusion, Flow, PixelCNN, VQVAE, AutoregressiveLM,
                                    MaskedLM, CycleGAN, Classifier])  # fmt: skip
def test_every_module_takes_the_options_in_its_signature(family):
    parameters = inspect.signature(family.__init__).parameters
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in OPTIONS)


def test_the_options_are_kept_and_the_hyperparameters_still_read_from_init():
    model = vae(freeze=["encoder.*"], init_key_map={"enc.": "encoder."})
    assert model.transfer_options.freeze == ("encoder.*",)
    assert model.hparams.latent_dim == 2 and model.hparams.likelihood == "gaussian_fixed"  # read from __init__'s frame
    assert model.hparams.freeze == ["encoder.*"] and model.hparams.init_key_map == {"enc.": "encoder."}
    assert inspect.signature(VAE.__init__).parameters["init_from"].default is None  # the signature is restored


@pytest.mark.parametrize("bad, message", [({"freeze": [3]}, "freeze must be a list"),
                                          ({"init_strict": "no"}, "init_strict must be"),
                                          ({"init_key_map": {"a": 1}}, "init_key_map must map")])  # fmt: skip
def test_wrong_option_types_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        vae(**bad)


# ---------------------------------------------------------------------------------------------------- init_from
def test_init_from_copies_every_matching_tensor_and_nothing_else(tmp_path, capsys):
    source = perturbed(gan(d_hidden=16), 1)
    source._generator_steps.fill_(5)  # run state: never copied
    extra = {"old_head.weight": torch.ones(3)}  # in the file only
    path = save(source, tmp_path / "a.ckpt", extra)
    target = perturbed(gan(d_hidden=8, init_from=str(path), init_strict=False), 2)  # D's shapes differ
    before, given = snapshot(target), source.state_dict()
    report = initialize_from(target, target.transfer_options)
    after = target.state_dict()
    copied = {n for n in after if "." in n and not n.startswith("ema.") and given[n].shape == before[n].shape}
    assert copied == {n for n in after if n.startswith("generator.")} | {"discriminator.head.linear.bias"}
    for name in after:
        if name in copied:
            assert torch.equal(after[name], given[name]), name
        elif name.startswith("ema.module."):
            assert torch.equal(after[name], after[name.replace("ema.module.", "generator.")]), name  # restarted
        elif name != "ema.n_averaged":
            assert torch.equal(after[name], before[name]), name  # other shapes and counters: untouched
    assert int(target.ema.n_averaged) == 0 and int(target._generator_steps) == 0
    assert report.loaded == sorted(copied) and not report.missing and report.unexpected == ["old_head.weight"]
    assert {m[0] for m in report.mismatched} == {n for n in after if n.startswith("discriminator.")} - copied
    table = capsys.readouterr().out
    assert f"init_from {path}: 7 tensors loaded" in table and "generator.net.* (6)" in table
    assert "shape skipped" in table and "old_head.weight" in table


def test_shapes_that_differ_are_one_clear_error_unless_init_strict_is_false(tmp_path):
    path = save(gan(d_hidden=16), tmp_path / "a.ckpt")
    target = gan(d_hidden=8, init_from=str(path))
    message = r"discriminator\.features\.0\.bias is \(16,\) in the file but \(8,\) here and 4 more; set --model"
    with pytest.raises(ValueError, match=message) as info:
        initialize_from(target, target.transfer_options)
    assert "\n" not in str(info.value)


def test_init_key_map_renames_prefixes(tmp_path):
    source = perturbed(vae(), 3)
    path = save(source, tmp_path / "a.ckpt", rename=lambda k: k.replace("encoder.", "enc."))
    target = vae(init_from=str(path), init_key_map={"enc.": "encoder."})
    report = initialize_from(target, target.transfer_options)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    assert not report.missing and not report.unexpected
    unmapped = vae(init_from=str(path))
    assert initialize_from(unmapped, unmapped.transfer_options).missing == sorted(
        k for k in unmapped.state_dict() if k.startswith("encoder."))  # fmt: skip


def test_a_source_with_nothing_in_common_is_one_clear_error(tmp_path):
    path = save(vae(), tmp_path / "vae.ckpt")
    target = gan(init_from=str(path))
    with pytest.raises(ValueError, match=r"none of its \d+ tensors matches .* --model.init_key_map"):
        initialize_from(target, target.transfer_options)
    with pytest.raises(FileNotFoundError, match="no such checkpoint or exported folder"):
        initialize_from(gan(init_from=str(tmp_path / "nope.ckpt")), gan(init_from="x").transfer_options)


def test_fit_loads_init_from_into_a_new_run_only(tmp_path, capsys):
    """A fresh fit loads it; a run resumed from its checkpoint (--ckpt_path) keeps its own weights: Lightning
    restores the checkpoint before on_fit_start, where init_from would be loaded."""
    source = perturbed(vae(), 4)
    init = save(source, tmp_path / "init.ckpt")
    fresh = vae(init_from=str(init))
    run = trainer(max_steps=3)
    run.fit(fresh, datamodule=toy_data())
    assert "init_from" in capsys.readouterr().out
    run.save_checkpoint(tmp_path / "run.ckpt")
    trained = snapshot(fresh)
    assert any(not torch.equal(trained[k], source.state_dict()[k]) for k in trained)  # it trained from there
    resumed = vae(init_from=str(init))
    trainer(max_steps=3).fit(resumed, datamodule=toy_data(), ckpt_path=tmp_path / "run.ckpt")  # nothing left to do
    assert "init_from" not in capsys.readouterr().out
    assert all(torch.equal(v, trained[k]) for k, v in resumed.state_dict().items())  # the run's, not init_from's
    trainer(max_steps=6).fit(fresh, datamodule=toy_data())  # a second fit of the same module continues it
    assert "init_from" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------- freeze
def fit_frozen(model, steps: int = 6):
    run = trainer(max_steps=steps)
    if isinstance(model, AutoregressiveLM):
        tokens = torch.randint(11, (64, 9), generator=torch.Generator().manual_seed(0))
        run.fit(model, train_dataloaders=DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=8))
    else:
        run.fit(model, datamodule=toy_data())
    return run


@pytest.mark.parametrize("make, patterns", [(gan, ["generator.net.0.*", "discriminator.head.*"]),
                                            (vae, ["encoder.*"]), (lm, ["net.blocks.0.*", "net.wte.*"])],
                         ids=["gan-manual", "vae-automatic", "gpt-decay-groups"])  # fmt: skip
def test_frozen_parameters_do_not_change_and_have_no_optimizer_state(make, patterns):
    model = make(freeze=patterns)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = fit_frozen(model)
    frozen = {n for n in before if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    assert frozen and len(frozen) < len(before)
    for name, param in model.named_parameters():
        assert param.requires_grad == (name not in frozen and not name.startswith("ema."))
        if name in frozen:
            assert torch.equal(param, before[name]), name
    trained = [n for n in before if n not in frozen and not n.startswith("ema.")]
    assert any(not torch.equal(dict(model.named_parameters())[n], before[n]) for n in trained)
    frozen_ids = {id(p) for n, p in model.named_parameters() if n in frozen}
    for optimizer in run.optimizers:
        grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert not grouped & frozen_ids and not {id(p) for p in optimizer.state} & frozen_ids


def test_a_pattern_that_matches_nothing_names_the_closest_prefixes():
    model = gan(freeze=["generator.nett.*"])
    with pytest.raises(ValueError, match=r"'generator.nett.\*' matches no parameter; the closest parameter prefixes "
                                         r"are generator.net.\*"):  # fmt: skip
        fit_frozen(model)


def test_freezing_a_whole_optimized_net_is_one_clear_error():
    with pytest.raises(ValueError, match="froze every parameter of the discriminator"):
        fit_frozen(gan(freeze=["discriminator.*"]))
    with pytest.raises(ValueError, match="freezes every parameter"):
        fit_frozen(vae(freeze=["*"]))


def test_abbreviated_groups_names_under_their_prefixes():
    names = [f"generator.net.{i}.weight" for i in range(3)] + ["discriminator.head.weight"]
    assert abbreviated(names) == "generator.net.* (3), discriminator.head.weight"
    assert abbreviated([f"a{i}.w" for i in range(6)], limit=2) == "a0.w, a1.w, +4 more"


def test_match_weights_leaves_run_state_to_the_run():
    target = {"net.w": torch.zeros(2), "ema.module.net.w": torch.zeros(2), "_steps": torch.zeros(())}
    source = {"net.w": torch.ones(2), "ema.module.net.w": torch.ones(2), "_steps": torch.ones(())}
    tensors, report = match_weights(target, source)
    assert list(tensors) == ["net.w"] and report.run_state == ["_steps", "ema.module.net.w"]
