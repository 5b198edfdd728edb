"""LoRA adapters through peft (genlit.families.lora): merged equals unmerged; only the adapters (and lora.train) train,
with optimizer state for them alone; the EMA carries the same adapters; a LoRA run resumes exactly; init_from loads
the base weights under the adapters; bad options are one clear line."""

import copy
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlit import ToyDataModule
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.diffusion import Diffusion
from genlit.families.gan import GAN
from genlit.families.lora import TRANSFORMER_TARGETS, base_name, is_adapter
from genlit.families.transfer import initialize_from
from genlit.families.vae import VAE
from genlit.nets.gpt import GPT
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder
from genlit.nets.unet import UNet

VOCAB, BLOCK = 11, 8


def lm(**kwargs) -> AutoregressiveLM:
    return AutoregressiveLM(partial(GPT, n_layer=2, n_head=2, n_embd=16), VOCAB, BLOCK, **kwargs)


def gan(**kwargs) -> GAN:
    nets = partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=16)
    return GAN(*nets, data_shape=(2,), ema_decay=0.9, **kwargs)


def with_trained_adapters(model, seed: int = 0):
    """``model`` with every weight perturbed, its adapters' B matrices included (a fresh adapter is the identity,
    B = 0; a fresh U-Net's output convolution is zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(torch.randn_like(param) * (0.05 if is_adapter(name) else 0.1))
    return model


def trainer(**kwargs) -> L.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
               "enable_model_summary": False, "limit_val_batches": 0}  # fmt: skip
    return L.Trainer(**(options | kwargs))


def tokens() -> DataLoader:
    ids = torch.randint(VOCAB, (24, BLOCK + 1), generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=8)  # 3 batches an epoch, in order


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -------------------------------------------------------------------------------------------- merge and unload
@pytest.mark.parametrize("make, inputs", [
    (lambda: lm(lora={"r": 4}), lambda: (torch.randint(VOCAB, (3, BLOCK)),)),
    (lambda: Diffusion(partial(UNet, channels=8, groups=4), lora={"r": 2}),
     lambda: (torch.randn(2, 1, 28, 28), torch.randint(1000, (2,)))),
], ids=["gpt-linear", "unet-conv-and-attention"])  # fmt: skip
def test_merged_equals_unmerged_and_has_the_plain_names(make, inputs):
    model = with_trained_adapters(make()).eval()
    net = model.net
    x = inputs()
    unmerged = net(*x)
    base = {base_name(n): t.clone() for n, t in model.state_dict().items() if ".base_layer." in n}
    assert model.merge_lora() is not None and model.lora_adapters is None
    merged = net(*x)
    assert torch.allclose(merged, unmerged, atol=1e-4, rtol=1e-4)  # float32 rounding, through the whole net
    state = model.state_dict()
    assert any(not torch.equal(state[name], t) for name, t in base.items() if name.endswith(".weight"))  # merged in
    plain = type(model)(**{k: v for k, v in model.hparams.items() if k not in ("_class_path", "lora")})
    assert set(state) == set(plain.state_dict())  # plain names, no adapter left (the EMA copy's too)
    assert model.merge_lora() is None


def test_the_default_targets_are_every_linear_of_each_block_and_the_options_are_recorded():
    model = lm(lora={"r": 4, "alpha": 8})
    assert model.lora_adapters.layers == [f"net.blocks.{b}.{t}" for b in range(2) for t in TRANSFORMER_TARGETS]
    assert model.hparams.lora == {"r": 4, "alpha": 8.0, "dropout": 0.0, "target": list(TRANSFORMER_TARGETS),
                                  "train": []}  # fmt: skip
    names = set(model.state_dict())
    assert "net.blocks.0.attn.qkv.base_layer.weight" in names and "net.blocks.0.attn.qkv.lora_A.default.weight" in names
    assert {"net.wte.weight", "net.lm_head.weight"} <= names  # the embedding and the tied head are left alone


# --------------------------------------------------------------------------------------------------- training
def test_only_the_adapters_train_and_only_they_have_optimizer_state():
    model = lm(lora={"r": 4})
    before = snapshot(model)
    run = trainer(max_steps=4)
    run.fit(model, train_dataloaders=tokens())
    after = model.state_dict()
    adapters = {n for n in after if is_adapter(n)}
    assert all(torch.equal(after[n], before[n]) for n in after if n not in adapters)  # base weights unchanged
    b_matrices = [n for n in adapters if ".lora_B." in n]
    assert b_matrices and all(before[n].abs().max() == 0 and after[n].abs().max() > 0 for n in b_matrices)
    optimized = {id(p) for group in run.optimizers[0].param_groups for p in group["params"]}
    adapter_ids = {id(p) for n, p in model.named_parameters() if is_adapter(n)}
    assert optimized == adapter_ids and {id(p) for p in run.optimizers[0].state} == adapter_ids


def test_a_gan_keeps_training_its_discriminator_and_its_ema_carries_the_adapters():
    model = gan(lora={"target": ["generator.net.*"]})
    before = snapshot(model)
    trainer(max_steps=6).fit(model, datamodule=ToyDataModule("ring8", batch_size=16, num_train=256, num_val=16))
    after = model.state_dict()
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert all(is_adapter(n) for n in changed if n.startswith("generator."))  # G's base weights stay
    assert any(".lora_B." in n for n in changed if n.startswith("generator."))
    assert any(n.startswith("discriminator.") for n in changed)  # lora.train's default for a GAN
    for name in after:  # the EMA copy: the same adapters, averaged; its base weights are the live ones
        if name.startswith("generator.") and ".base_layer." in name:
            assert torch.equal(after[name.replace("generator.", "ema.module.", 1)], after[name])
    assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith("ema.module.") and ".lora_B." in n)
    assert not any(p.requires_grad for p in model.ema.parameters())
    drawn = model.sample(4, generator=torch.Generator().manual_seed(0))  # the EMA's weights, adapters included
    model.merge_lora()  # the EMA copy's adapters are merged too, into its own weights
    assert torch.allclose(model.sample(4, generator=torch.Generator().manual_seed(0)), drawn, atol=1e-5)


def test_freeze_applies_on_top_of_lora_train():
    model = gan(lora={"target": ["generator.net.*"], "train": ["discriminator.*"]},
                freeze=["discriminator.features.*"])  # fmt: skip
    trainer(max_steps=2).fit(model, datamodule=ToyDataModule("ring8", batch_size=16, num_train=64, num_val=16))
    training = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in training if n.startswith("discriminator.")} == {"discriminator.head.linear.weight",
                                                                        "discriminator.head.linear.bias"}  # fmt: skip


def test_a_lora_run_resumes_from_its_checkpoint(tmp_path):
    torch.manual_seed(1)
    first = lm(lora={"r": 4})
    start = snapshot(first)
    run = trainer(max_steps=3)
    run.fit(first, train_dataloaders=tokens())
    run.save_checkpoint(tmp_path / "lora.ckpt")
    saved = snapshot(first)
    resumed = lm(lora={"r": 4})  # other fresh weights: the checkpoint's replace them, optimizer state included
    again = trainer(max_steps=6)
    again.fit(resumed, train_dataloaders=tokens(), ckpt_path=tmp_path / "lora.ckpt")
    assert again.global_step == 6 and set(resumed.state_dict()) == set(saved)
    state = resumed.state_dict()
    for name, value in state.items():
        if is_adapter(name):
            assert not torch.equal(value, saved[name]) or ".lora_A." in name, name  # trained on
        else:
            assert torch.equal(value, start[name]), name  # the base weights never moved
    adam = again.optimizers[0]
    adapters = {id(p) for n, p in resumed.named_parameters() if is_adapter(n)}
    assert {id(p) for p in adam.state} == adapters and all(int(s["step"]) == 6 for s in adam.state.values())
    loaded = AutoregressiveLM.load_from_checkpoint(tmp_path / "lora.ckpt", weights_only=False)
    assert loaded.lora_adapters is not None and all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())


# -------------------------------------------------------------------------------------------------- init_from
def test_init_from_loads_the_base_weights_under_fresh_adapters(tmp_path, capsys):
    source = lm()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": {}}, path)
    target = lm(init_from=str(path), lora={"r": 4})
    report = initialize_from(target, target.transfer_options)
    state = target.state_dict()
    for name, value in source.state_dict().items():
        adapted = {base_name(n): n for n in state if not is_adapter(n)}
        assert torch.equal(state[adapted[name]], value), name
    assert not report.missing and not report.unexpected and len(report.adapters) == 16
    assert "lora adapters" in capsys.readouterr().out
    x = torch.randint(VOCAB, (2, BLOCK))
    assert torch.allclose(target.net(x), source.net(x), atol=1e-6)  # B = 0: the run starts at the loaded model
    lora_ckpt = tmp_path / "lora.ckpt"
    torch.save({"state_dict": target.state_dict(), "hyper_parameters": {}}, lora_ckpt)
    again = lm(init_from=str(lora_ckpt))
    with pytest.raises(ValueError, match="holds LoRA adapters; genlit export it first"):
        initialize_from(again, again.transfer_options)


# ------------------------------------------------------------------------------------------------ bad options
@pytest.mark.parametrize("make, message", [
    (lambda: lm(lora={"target": ["attn.qkvv"]}), r"target 'attn.qkvv' matches no layer; the closest layer names are "
                                                 r"attn.qkv"),
    (lambda: lm(lora={"target": ["ln1"]}), r"'ln1' matches net.blocks.0.ln1 \(a LayerNorm\) but no layer LoRA can "
                                           r"adapt"),
    (lambda: lm(lora={"target": ["lm_head"]}), r"net.lm_head shares its weight with net.wte.weight \(tied\)"),
    (lambda: gan(lora={}), r"GAN has no default LoRA targets; name the layers"),
    (lambda: gan(lora={"target": ["generator.net.*"], "train": ["disc.*"]}), r"train 'disc.\*' matches no parameter"),
    (lambda: lm(lora={"rank": 4}), r"lora has no option rank; its options: r, alpha, dropout, target, train"),
    (lambda: lm(lora={"r": 0}), r"lora r \(the rank\) must be an integer >= 1"),
    (lambda: lm(lora=[4]), r"lora must be a mapping"),
], ids=["no-match", "not-adaptable", "tied", "no-default", "bad-train", "unknown-key", "bad-rank",
        "not-a-mapping"])  # fmt: skip
def test_bad_lora_options_are_one_clear_line(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_every_family_takes_lora_and_a_vae_adapts_the_layers_it_is_given():
    model = VAE(partial(MLPEncoder, hidden=16), partial(MLPDecoder, hidden=16), data_shape=(2,), latent_dim=2,
                likelihood="gaussian_fixed", lora={"target": ["decoder.*"]})  # fmt: skip
    assert model.lora_adapters.layers and all(n.startswith("decoder.") for n in model.lora_adapters.layers)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not is_adapter(n))
    copy.deepcopy(model).merge_lora()  # a copy merges on its own
    assert model.lora_adapters is not None
