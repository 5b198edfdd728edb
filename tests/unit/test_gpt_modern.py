"""The modern GPT options (rotary, RMSNorm, QK-norm, squared ReLU, untied head, logit soft-cap, encoder mode) and
the optimizer parts that go with them: decay_groups' Muon group, MuonAdamW and WarmupStableDecayLR."""

from __future__ import annotations

import io
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import genlit.nets.gpt as gpt_module
from genlit.families.autoregressive import AutoregressiveLM
from genlit.nets.gpt import GPT, apply_rotary, rotary_tables
from genlit.optim import MuonAdamW, WarmupStableDecayLR, decay_groups

VOCAB, BLOCK = 11, 16
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16}
MODERN = {"position": "rotary", "qk_norm": True, "norm": "rmsnorm", "mlp": "relu2", "tie_weights": False}


def _tiny(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(VOCAB, BLOCK, **{**TINY, **kwargs}).eval()


def _modern(softcap: float | None = 3.0, **kwargs) -> GPT:
    """The whole modern recipe, with the zero-initialized untied head made random so the logits say something."""
    net = _tiny(**MODERN, logit_softcap=softcap, **kwargs)
    with torch.no_grad():
        net.lm_head.weight.normal_(0.0, 0.5)
    return net


# ------------------------------------------------------------------------------------------------ rotary
def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    b, nh, t, hd = 2, 3, 5, 8
    q, k = torch.randn(b, nh, t, hd), torch.randn(b, nh, t, hd)
    cos, sin = rotary_tables(64, hd)
    assert cos.shape == sin.shape == (64, hd // 2)

    def scores(q_at: int, k_at: int) -> torch.Tensor:
        rq = apply_rotary(q, cos[q_at : q_at + t], sin[q_at : q_at + t])
        rk = apply_rotary(k, cos[k_at : k_at + t], sin[k_at : k_at + t])
        return rq @ rk.transpose(-2, -1)  # (B, nh, T, T)

    at_zero, at_37 = scores(0, 0), scores(37, 37)
    torch.testing.assert_close(at_37, at_zero, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(at_zero, q @ k.transpose(-2, -1), atol=1e-2)  # the rotation does act
    assert not torch.allclose(scores(37, 38), at_zero, atol=1e-2)  # a shifted key changes the scores
    rotated = apply_rotary(q, cos[37 : 37 + t], sin[37 : 37 + t])
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps lengths


def test_rotary_gpt_has_no_learned_position_embedding():
    net = _tiny(position="rotary")
    assert net.position == "rotary" and not hasattr(net, "wpe")
    assert not any(name.startswith("wpe") for name, _ in net.named_parameters())
    assert not any(name.startswith("rotary") for name in net.state_dict())  # tables are rebuilt, not saved
    learned = _tiny()
    assert learned.position == "learned" and "wpe.weight" in dict(learned.named_parameters())
    assert net(torch.randint(0, VOCAB, (2, BLOCK))).shape == (2, BLOCK, VOCAB)


# ------------------------------------------------------------------------------------------------ cache
@pytest.mark.parametrize("chunks", [[], [5], [3, 4], [1, 6, 2]], ids=["tokens", "prefill", "two_chunks", "mixed"])
def test_kv_cache_matches_full_forward_for_the_modern_recipe(chunks):
    net = _modern()
    idx = torch.randint(0, VOCAB, (3, BLOCK))
    with torch.no_grad():
        full = net(idx)
        cache = net.new_cache(3)
        outs, pos = [], 0
        for n in chunks + [1] * (BLOCK - sum(chunks)):
            outs.append(net(idx[:, pos : pos + n], cache))
            pos += n
            assert cache.length == pos
    assert full.std() > 0.1  # the head is not the zero it starts as: the comparison below means something
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ head
def test_logit_softcap_bounds_the_logits():
    cap = 2.0
    capped, plain = _modern(softcap=cap), _modern(softcap=None)
    plain.load_state_dict(capped.state_dict())
    idx = torch.randint(0, VOCAB, (4, BLOCK))
    with torch.no_grad():  # raw logits up to 3 c: well past the cap, not so far that float32 tanh rounds to 1
        plain.lm_head.weight.mul_(3 * cap / plain(idx).abs().max())
        capped.lm_head.weight.copy_(plain.lm_head.weight)
        raw, logits = plain(idx), capped(idx)
    assert raw.abs().max() > 2 * cap  # the cap has work to do
    assert logits.abs().max() < cap
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))


def test_untied_head_is_separate_and_starts_at_zero_and_tied_head_is_shared():
    untied = _tiny(tie_weights=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert "lm_head.weight" in dict(untied.named_parameters())
    assert torch.count_nonzero(untied.lm_head.weight) == 0 and untied.wte.weight.std() > 0.01
    with torch.no_grad():
        probs = untied(torch.randint(0, VOCAB, (2, 7))).softmax(-1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / VOCAB))  # the first logits are uniform
    tied = _tiny(tie_weights=True)
    assert tied.lm_head.weight is tied.wte.weight
    assert "lm_head.weight" not in dict(tied.named_parameters())


# ------------------------------------------------------------------------------------------------ encoder
def test_bidirectional_encoder_sees_later_tokens_and_has_no_cache():
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % VOCAB
    encoder, decoder = _tiny(causal=False, position="rotary"), _tiny(causal=True, position="rotary")
    with torch.no_grad():
        enc_a, enc_b = encoder(idx), encoder(changed)
        dec_a, dec_b = decoder(idx), decoder(changed)
    assert not torch.allclose(enc_a[:, :t], enc_b[:, :t])  # earlier logits see the later token
    assert torch.equal(dec_a[:, :t], dec_b[:, :t])  # a decoder's do not
    with pytest.raises(ValueError, match="bidirectional encoder") as info:
        encoder.new_cache(1)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="bidirectional encoder") as info:
        encoder(idx, decoder.new_cache(2))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"position": "abs"}, r"position 'abs' is not known; use one of learned, rotary$"),
        ({"norm": "batch"}, r"norm 'batch' is not known; use one of layernorm, rmsnorm$"),
        ({"mlp": "swish"}, r"mlp 'swish' is not known; use one of gelu, relu2$"),
        ({"logit_softcap": 0}, r"logit_softcap must be positive \(or null for none\), got 0$"),
        ({"logit_softcap": -1.0}, r"logit_softcap must be positive"),
    ],
)
def test_bad_option_values_are_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        GPT(VOCAB, BLOCK, **{**TINY, **kwargs})
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ checkpointing
def _loss_and_grads(net: GPT, idx: torch.Tensor, seed: int = 123) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net.zero_grad()
    torch.manual_seed(seed)
    logits = net(idx[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def test_activation_checkpointing_with_rotary_gives_same_loss_and_gradients(monkeypatch):
    options = {**TINY, **MODERN, "dropout": 0.2, "logit_softcap": 3.0}
    torch.manual_seed(0)
    plain = GPT(VOCAB, BLOCK, **options).train()
    ckpt = GPT(VOCAB, BLOCK, activation_checkpointing=True, **options).train()
    with torch.no_grad():
        plain.lm_head.weight.normal_(0.0, 0.5)  # so gradients reach the blocks through the head
    ckpt.load_state_dict(plain.state_dict())
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(args)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(gpt_module, "checkpoint", counting_checkpoint)
    idx = torch.randint(0, VOCAB, (4, BLOCK))
    loss_plain, grads_plain = _loss_and_grads(plain, idx)
    loss_ckpt, grads_ckpt = _loss_and_grads(ckpt, idx)
    assert len(calls) == TINY["n_layer"] and all(args[-1] is not None for args in calls)  # the rotary tables
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for g_ckpt, g_plain in zip(grads_ckpt, grads_plain, strict=True):
        torch.testing.assert_close(g_ckpt, g_plain)
    assert all(g.abs().sum() > 0 for g in grads_plain)


# ------------------------------------------------------------------------------------------------ decay_groups
def test_decay_groups_with_hidden_put_exactly_the_block_matrices_in_the_muon_group():
    net = GPT(VOCAB, BLOCK, **TINY, bias=True, tie_weights=False)
    groups = decay_groups(net, 0.1, hidden=net.blocks)
    assert [g["use_muon"] for g in groups] == [True, False, False]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.1, 0.0]
    muon, decay, rest = ({id(p) for p in g["params"]} for g in groups)
    matrices = {id(p) for block in net.blocks for p in block.parameters() if p.dim() == 2}
    assert len(matrices) == 4 * TINY["n_layer"]  # qkv, out_proj, fc, fc_out
    assert muon == matrices
    assert decay == {id(net.lm_head.weight)}  # the untied head: decayed, but Adam's
    assert {id(net.wte.weight), id(net.wpe.weight)} <= rest
    assert id(net.blocks[0].attn.qkv.bias) in rest and id(net.blocks[0].ln1.weight) in rest
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))  # each parameter once
    old_decay, old_rest = decay_groups(net, 0.1)
    assert {id(p) for p in old_decay["params"]} == muon | decay and {id(p) for p in old_rest["params"]} == rest


def test_decay_groups_drop_empty_groups_and_keep_the_old_two_without_hidden():
    net = GPT(VOCAB, BLOCK, **TINY)  # tied head: no decayed matrix outside the blocks
    groups = decay_groups(net, 0.1, hidden=net.blocks)
    assert [g["use_muon"] for g in groups] == [True, False] and all(g["params"] for g in groups)
    old = decay_groups(net, 0.1)
    assert [sorted(g) for g in old] == [["params", "weight_decay"]] * 2  # no use_muon key
    assert [g["weight_decay"] for g in old] == [0.1, 0.0]
    assert [id(p) for p in old[0]["params"]] == [id(p) for p in groups[0]["params"]]


# ------------------------------------------------------------------------------------------------ Muon
@pytest.mark.parametrize(("shape", "adjust"), [((32, 16), None), ((16, 32), "original")], ids=["tall", "wide"])
def test_muon_update_is_orthogonalized(shape, adjust):
    """Muon's update, lr * sqrt(max(1, rows / cols)) * NS(grad) for "original", has singular values near 1.

    NS is five steps of Keller Jordan's quintic (3.4445, -4.775, 2.0315), chosen for a steep slope at zero rather
    than convergence: it maps every singular value of the Frobenius-normalized gradient into roughly [0.68, 1.13]
    (torch's docstring: "S' ~ Uniform(0.5, 1.5)"), in bfloat16. Measured here: [0.68, 1.14]. The bound [0.6, 1.3]
    leaves room for bfloat16 rounding, yet fails a missing shape factor (x sqrt 2 for the tall matrix) and a plain
    gradient step (singular values of a 32 x 16 Gaussian spread over about 1.7 to 10).
    """
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(shape))
    old = param.detach().clone()
    lr = 0.1
    opt = MuonAdamW([{"params": [param], "use_muon": True, "weight_decay": 0.0}], muon_lr=lr, momentum=0.0,
                    nesterov=False, adjust_lr_fn=adjust)  # fmt: skip
    param.grad = torch.randn(shape)
    opt.step()
    rows, cols = shape
    update = (old - param.detach()) / (lr * max(1.0, rows / cols) ** 0.5)
    singular = torch.linalg.svdvals(update)
    assert 0.6 <= singular.min() and singular.max() <= 1.3, singular
    grad_singular = torch.linalg.svdvals(param.grad)
    assert grad_singular.max() / grad_singular.min() > 2  # the gradient itself was far from orthogonal
    u, _, vh = torch.linalg.svd(param.grad, full_matrices=False)
    assert F.cosine_similarity(update.flatten(), (u @ vh).flatten(), dim=0) > 0.95  # ~ U V^T of the gradient


def _problem(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(6, 4), torch.randn(16, 6), torch.randn(16, 4)


def _groups(layer: nn.Linear) -> list[dict]:
    return [
        {"params": [layer.weight], "use_muon": True, "weight_decay": 0.01},
        {"params": [layer.bias], "use_muon": False, "weight_decay": 0.0},
    ]


def _steps(layer: nn.Linear, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
    for _ in range(n):
        opt.zero_grad()
        F.mse_loss(layer(x), y).backward()
        opt.step()


def test_muon_adamw_state_dict_round_trip_continues_identically():
    layer, x, y = _problem()
    opt = MuonAdamW(_groups(layer), lr=0.01, muon_lr=0.05)
    _steps(layer, opt, x, y, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    copy = nn.Linear(6, 4)
    copy.load_state_dict(layer.state_dict())
    fresh = MuonAdamW(_groups(copy), lr=0.5, muon_lr=0.5)  # other rates: the loaded groups must win
    fresh.load_state_dict(saved)
    assert fresh._muon.param_groups[0] is fresh.param_groups[0] and fresh._adam.param_groups[0] is fresh.param_groups[1]
    assert fresh._muon.state is fresh.state and fresh._adam.state is fresh.state
    _steps(layer, opt, x, y, 3)
    _steps(copy, fresh, x, y, 3)
    for a, b in zip(layer.parameters(), copy.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=0, rtol=0)

    for group in fresh.param_groups:  # an LR change on the outer groups (what a scheduler does) reaches both
        group["lr"] = 0.0
    before = [p.detach().clone() for p in copy.parameters()]
    _steps(copy, fresh, x, y, 1)
    for a, b in zip(before, copy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_muon_adamw_argument_errors_and_muon_only():
    layer, x, y = _problem()
    with pytest.raises(ValueError, match="no param group tagged use_muon") as info:
        MuonAdamW([{"params": list(layer.parameters()), "use_muon": False}])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no param group tagged use_muon"):
        MuonAdamW(layer.parameters())
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": list(layer.parameters()), "use_muon": True}])  # the bias is 1-D

    muon_only = MuonAdamW([{"params": [layer.weight], "use_muon": True}], muon_lr=0.05)
    assert len(muon_only.param_groups) == 1 and muon_only.param_groups[0]["use_muon"]
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    loss_before = F.mse_loss(layer(x), y).item()
    _steps(layer, muon_only, x, y, 5)
    assert not torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    assert F.mse_loss(layer(x), y).item() < loss_before
    state = muon_only.state_dict()
    again = MuonAdamW([{"params": [layer.weight], "use_muon": True}])
    again.load_state_dict(state)
    assert again.param_groups[0]["lr"] == 0.05 and again._muon.state is again.state


# ------------------------------------------------------------------------------------------------ WSD schedule
def test_warmup_stable_decay_factors_and_group_ratio():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.1}])
    sched = WarmupStableDecayLR(opt, total_steps=20, cooldown_steps=8, warmup_steps=4, final_fraction=0.1)
    rates = []
    for _ in range(26):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = {0: 1 / 5, 3: 4 / 5, 4: 1.0, 11: 1.0, 12: 1.0, 16: 1 - 0.5 * 0.9, 19: 1 - 7 / 8 * 0.9, 20: 0.1, 25: 0.1}
    for step, factor in expected.items():
        assert rates[step][0] == pytest.approx(factor), step
        assert sched.factor(step) == pytest.approx(factor), step
    assert all(high == pytest.approx(10 * low) for high, low in rates)  # the groups keep their ratio
    assert all(later <= earlier for (earlier, _), (later, _) in zip(rates[12:], rates[13:], strict=False))


def test_warmup_stable_decay_without_cooldown_or_warmup():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupStableDecayLR(opt, total_steps=10, cooldown_steps=0, final_fraction=0.25)
    assert [sched.factor(s) for s in (0, 9, 10, 11)] == [1.0, 1.0, 0.25, 0.25]  # final_fraction at total_steps
    assert opt.param_groups[0]["lr"] == 1.0  # no warm-up: the first step at the full rate


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_steps": 10, "cooldown_steps": 6, "warmup_steps": 5},
        {"total_steps": 10, "cooldown_steps": -1},
        {"total_steps": 10, "cooldown_steps": 2, "warmup_steps": -1},
        {"total_steps": 10, "cooldown_steps": 11},
    ],
)
def test_warmup_stable_decay_bad_steps_raise(kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps - cooldown_steps"):
        WarmupStableDecayLR(opt, **kwargs)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_warmup_stable_decay_bad_final_fraction_raises(fraction):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"final_fraction must lie in \[0, 1\]"):
        WarmupStableDecayLR(opt, total_steps=10, cooldown_steps=2, final_fraction=fraction)


# ------------------------------------------------------------------------------------------------ Lightning
def _sequences(num: int = 64, length: int = 9) -> DataLoader:
    """Counting sequences ``s, s+1, ...`` mod VOCAB: next-token prediction a small net learns in a few steps."""
    starts = torch.randint(0, VOCAB, (num, 1), generator=torch.Generator().manual_seed(0))
    seq = (starts + torch.arange(length)) % VOCAB  # (N, length)
    return DataLoader(TensorDataset(seq[:, :-1], seq[:, 1:]), batch_size=16, shuffle=False)


def _trainer(tmp_path, max_steps: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.optimizer_state: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        self.linked = opt._muon.state is opt.state and opt._muon.param_groups[0] is opt.param_groups[0]
        self.optimizer_state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(opt.state.values())}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_autoregressive_lm_trains_with_muon_adamw_and_resumes(tmp_path):
    def build() -> AutoregressiveLM:
        torch.manual_seed(0)
        net = partial(GPT, **TINY, **MODERN, logit_softcap=15.0)
        return AutoregressiveLM(net, VOCAB, 8, optimizer=partial(MuonAdamW, lr=1e-2, muon_lr=0.05))

    model, first = build(), _Losses()
    trainer = _trainer(tmp_path, 16, [first])
    trainer.fit(model, _sequences())
    opt = trainer.optimizers[0]
    assert isinstance(opt, MuonAdamW) and [g["use_muon"] for g in opt.param_groups] == [True, False, False]
    assert len(first.losses) == 16
    assert sum(first.losses[-4:]) / 4 < 0.7 * first.losses[0], first.losses  # ln(11) = 2.4 at the start
    ckpt = tmp_path / "lm.ckpt"
    trainer.save_checkpoint(ckpt)
    saved_state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(opt.state.values())}
    kinds = {key for s in saved_state.values() for key in s}
    assert {"momentum_buffer", "exp_avg"} <= kinds  # Muon's and AdamW's state, both to restore

    second = _Losses()
    resumed = _trainer(tmp_path, 20, [second])
    resumed.fit(build(), _sequences(), ckpt_path=ckpt)
    assert second.linked  # the inner optimizers share the restored groups and state
    assert second.optimizer_state.keys() == saved_state.keys()
    for restored, original in zip(second.optimizer_state.values(), saved_state.values(), strict=True):
        assert restored.keys() == original.keys()
        for key in original:
            torch.testing.assert_close(restored[key], original[key])
    assert len(second.losses) == 4 and second.losses[0] < first.losses[-1]  # it goes on from where it stopped
    stored = torch.load(ckpt, weights_only=True)  # genlit's safe loading: MuonAdamW's state is plain data
    assert [g["use_muon"] for g in stored["optimizer_states"][0]["param_groups"]] == [True, False, False]
