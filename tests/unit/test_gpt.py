"""GPT: causal masking, KV cache against a full forward, tied head, checkpointing, FLOP/parameter counts, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import genlit.nets.gpt as gpt_module
from genlit.nets.gpt import GPT, KVCache

VOCAB, BLOCK = 11, 16
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16}


def _tiny(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(VOCAB, BLOCK, **{**TINY, **kwargs}).eval()


def test_shapes_and_context_size():
    net = _tiny()
    assert net.context_size == BLOCK
    logits = net(torch.randint(0, VOCAB, (3, 7)))
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == torch.float32


def test_causal_masking():
    net = _tiny()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % VOCAB
    with torch.no_grad():
        a, b = net(idx), net(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t], b[:, t])


def _incremental(net: GPT, idx: torch.Tensor, chunks: list[int]) -> tuple[torch.Tensor, KVCache]:
    """Feed ``idx`` through one cache in chunks of the given lengths, then token by token; concat the logits."""
    cache = net.new_cache(idx.shape[0])
    outs, pos = [], 0
    for n in chunks + [1] * (idx.shape[1] - sum(chunks)):
        outs.append(net(idx[:, pos : pos + n], cache))
        pos += n
        assert cache.length == pos
    return torch.cat(outs, dim=1), cache


@pytest.mark.parametrize("chunks", [[], [5], [3, 4], [1, 6, 2]], ids=["tokens", "prefill", "two_chunks", "mixed"])
def test_kv_cache_matches_full_forward(chunks):
    net = _tiny(bias=True)
    idx = torch.randint(0, VOCAB, (3, BLOCK))
    with torch.no_grad():
        full = net(idx)
        inc, cache = _incremental(net, idx, chunks)
    assert cache.length == BLOCK
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=1e-5)


def test_kv_cache_reset_and_buffers():
    net = _tiny()
    cache = net.new_cache(4)
    assert cache.batch_size == 4 and cache.capacity == BLOCK and len(cache.keys) == TINY["n_layer"]
    assert cache.keys[0].shape == (4, TINY["n_head"], BLOCK, TINY["n_embd"] // TINY["n_head"])
    assert cache.keys[0].dtype == net.wte.weight.dtype
    idx = torch.randint(0, VOCAB, (4, 6))
    with torch.no_grad():
        first = net(idx, cache)
        cache.reset()
        assert cache.length == 0
        again = net(idx, cache)
    torch.testing.assert_close(again, first)


def test_exceeding_block_size_is_a_clear_error():
    net = _tiny()
    with pytest.raises(ValueError, match=rf"{BLOCK + 1}.*block_size {BLOCK}"):
        net(torch.zeros(1, BLOCK + 1, dtype=torch.long))
    cache = net.new_cache(1)
    with torch.no_grad():
        net(torch.zeros(1, BLOCK - 2, dtype=torch.long), cache)
        with pytest.raises(ValueError, match=rf"holds {BLOCK - 2} tokens.*{BLOCK + 1} > block_size {BLOCK}"):
            net(torch.zeros(1, 3, dtype=torch.long), cache)
    assert cache.length == BLOCK - 2  # a refused call leaves the cache as it was


def test_bad_inputs_are_clear_errors():
    net = _tiny()
    with pytest.raises(ValueError, match="cache holds 2 sequences but idx has 3"):
        net(torch.zeros(3, 1, dtype=torch.long), net.new_cache(2))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        net(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        net(torch.zeros(1, 4))


def test_head_is_tied_to_token_embedding():
    net = _tiny()
    assert net.lm_head.weight is net.wte.weight
    names = [name for name, _ in net.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names  # one Parameter, listed once


def test_gpt2_initialisation():
    torch.manual_seed(0)
    net = GPT(VOCAB, BLOCK, n_layer=8, n_head=4, n_embd=64, bias=True)
    residual_std = 0.02 / math.sqrt(2 * 8)
    for block in net.blocks:
        assert block.attn.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.1)
        assert block.mlp.fc_out.weight.std().item() == pytest.approx(residual_std, rel=0.1)
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.count_nonzero(block.mlp.fc.bias) == 0
    assert net.wpe.weight.std().item() == pytest.approx(0.02, rel=0.1)


def _loss_and_grads(net: GPT, idx: torch.Tensor, seed: int = 123) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net.zero_grad()
    torch.manual_seed(seed)
    logits = net(idx[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def test_activation_checkpointing_gives_same_loss_and_gradients(monkeypatch):
    plain = GPT(VOCAB, BLOCK, dropout=0.2, bias=True, **TINY).train()
    ckpt = GPT(VOCAB, BLOCK, dropout=0.2, bias=True, activation_checkpointing=True, **TINY).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(gpt_module, "checkpoint", counting_checkpoint)
    idx = torch.randint(0, VOCAB, (4, BLOCK))
    loss_plain, grads_plain = _loss_and_grads(plain, idx)
    loss_ckpt, grads_ckpt = _loss_and_grads(ckpt, idx)
    assert len(calls) == TINY["n_layer"] and all(c["use_reentrant"] is False for c in calls)
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for g_ckpt, g_plain in zip(grads_ckpt, grads_plain, strict=True):
        torch.testing.assert_close(g_ckpt, g_plain)
    other_seed_loss, _ = _loss_and_grads(plain, idx, seed=7)
    assert not torch.allclose(other_seed_loss, loss_plain)  # dropout is active, so the match above is not trivial
    ckpt.eval()
    with torch.no_grad():
        ckpt(idx)
    assert len(calls) == TINY["n_layer"]  # no checkpointing in eval mode


def test_num_parameters_and_flops_by_hand():
    net = GPT(VOCAB, 8, n_layer=2, n_head=2, n_embd=16, bias=False)
    c = 16
    # per block: ln1 C + qkv C*3C + out_proj C*C + ln2 C + fc C*4C + fc_out 4C*C
    block = c + 3 * c * c + c * c + c + 4 * c * c + 4 * c * c
    assert block == 3104
    wte, wpe, ln_f = VOCAB * c, 8 * c, c
    assert net.num_parameters(non_embedding=False) == 2 * block + ln_f + wte + wpe == 6528
    assert net.num_parameters() == 6528 - 128 == 6400
    assert net.flops_per_token() == 6 * 6400 + 12 * 2 * 16 * 8 == 41472
    with_bias = GPT(VOCAB, 8, n_layer=2, n_head=2, n_embd=16, bias=True)
    # biases per block: 2 LayerNorms 2C + qkv 3C + out_proj C + fc 4C + fc_out C; plus ln_f C
    assert with_bias.num_parameters() == 6400 + 2 * (2 * c + 3 * c + c + 4 * c + c) + c


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd divisible by n_head.*n_embd=30, n_head=4"),
        ({"n_layer": 0}, "positive sizes.*n_layer"),
        ({"n_head": -1}, "positive sizes.*n_head"),
        ({"dropout": 1.0}, "0 <= dropout < 1"),
        ({"dropout": -0.1}, "0 <= dropout < 1"),
    ],
)
def test_invalid_args_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPT(VOCAB, BLOCK, **{**TINY, **kwargs})
    with pytest.raises(ValueError, match="positive sizes.*block_size"):
        GPT(VOCAB, 0)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        _tiny().new_cache(0)
