"""The autoregressive family: generation with a cache equals full recomputation, sampling filters, metrics,
optimizer groups and the learning-rate schedule, and the tokenizer carried by the checkpoint."""

import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from genlit.data.tokenizers import BPETokenizer, CharTokenizer
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.token_sampling import filter_logits, sample_next
from genlit.nets.gpt import GPT
from genlit.nets.rnn import CharRNN
from genlit.optim import WarmupCosineLR, decay_groups
from genlit.seeding import SampleRNG

TEXT = "to be, or not to be: that is the question.\n"


def tiny_lm(net=None, block_size=8, tokenizer=None):
    tokenizer = tokenizer or CharTokenizer.from_text(TEXT)
    net = net or partial(GPT, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = AutoregressiveLM(net, tokenizer.vocab_size, block_size)
    model.set_tokenizer(tokenizer)
    return model.eval()


def recompute_greedy(model, prompt, new_tokens):
    """Greedy decoding by a full forward over the (cropped) sequence for every token: the reference."""
    seq = prompt
    context = model.net.context_size
    for _ in range(new_tokens):
        window = seq if context is None else seq[:, -context:]
        seq = torch.cat([seq, model.net(window)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq


@pytest.mark.parametrize("net", [None, partial(CharRNN, hidden_size=16, embed_dim=8, num_layers=2)])
def test_cached_generation_equals_full_recomputation_past_the_context(net):
    model = tiny_lm(net)
    prompt = torch.randint(model.hparams.vocab_size, (3, 5))
    cached = model.generate(prompt, 20, temperature=0)  # 25 tokens: well past block_size 8
    assert torch.equal(cached, recompute_greedy(model, prompt, 20))


def test_seeded_sampling_is_reproducible_per_row_and_matches_recomputation():
    model = tiny_lm()
    prompt = torch.randint(model.hparams.vocab_size, (2, 3))
    first = model.generate(prompt, 12, generator=SampleRNG(range(2), 1))
    again = model.generate(prompt, 12, generator=SampleRNG(range(2), 1))
    assert torch.equal(first, again)
    alone = model.generate(prompt[1:], 12, generator=SampleRNG([1], 1))  # row 1 depends on (seed, 1) only
    assert torch.equal(first[1:], alone)
    seq, rng = prompt, SampleRNG(range(2), 1)
    for _ in range(12):
        logits = model.net(seq[:, -8:])[:, -1]
        seq = torch.cat([seq, sample_next(logits, uniform=rng.rand())[:, None]], 1)
    assert torch.equal(first, seq)


def test_top_k_and_top_p_never_sample_outside_their_sets():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    gen = torch.Generator().manual_seed(0)
    top5 = logits.topk(5, dim=-1).indices
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    nucleus_size = (sorted_probs.cumsum(-1) < 0.6).sum(-1) + 1  # smallest set with mass >= 0.6
    for _ in range(300):
        k_draw = sample_next(logits, top_k=5, generator=gen)
        assert all(k_draw[i] in top5[i] for i in range(4))
        p_draw = sample_next(logits, top_p=0.6, generator=gen)
        assert all(p_draw[i] in order[i, : nucleus_size[i]] for i in range(4))
    both = filter_logits(logits, top_k=2, top_p=0.99).isfinite().sum(-1)
    assert (both == 2).all()


def test_top_p_keeps_the_most_likely_token_even_for_tiny_p_and_greedy_is_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    assert filter_logits(logits, top_p=1e-6).isfinite().tolist() == [[False, True, False]]
    assert sample_next(logits, temperature=0).item() == 1


@pytest.mark.parametrize("options", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_sampling_options_are_clear_errors(options):
    model = tiny_lm()
    with pytest.raises(ValueError, match="temperature|top_k|top_p"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 2, **options)


def test_prompt_outside_a_character_vocabulary_is_a_clear_error():
    model = tiny_lm()
    with pytest.raises(ValueError, match="Z"):
        model.sample(1, prompt="Zebra", max_new_tokens=2)
    (text,) = model.sample(1, prompt="to be", max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert text.startswith("to be") and len(text) == 9


def test_decay_groups_skip_biases_norms_and_embeddings_and_count_tied_weights_once():
    net = GPT(30, 8, n_layer=1, n_head=2, n_embd=16, bias=True)
    decay, rest = decay_groups(net, 0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(net.wte.weight) not in decayed and id(net.wpe.weight) not in decayed  # embeddings (and tied head)
    assert id(net.blocks[0].ln1.weight) not in decayed and id(net.blocks[0].attn.qkv.bias) not in decayed
    assert id(net.blocks[0].attn.qkv.weight) in decayed and id(net.blocks[0].mlp.fc.weight) in decayed
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))  # each once


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_steps=10, decay_steps=110, min_lr=0.1)
    rates = []
    for _ in range(130):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(1 / 11) and rates[9] == pytest.approx(10 / 11)
    assert rates[10] == pytest.approx(1.0) and rates[60] == pytest.approx(0.1 + 0.9 * 0.5)
    assert rates[110] == pytest.approx(0.1) and rates[129] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_steps"):
        WarmupCosineLR(opt, warmup_steps=10, decay_steps=10)


def test_validation_metrics_bits_per_char_and_per_byte():
    model = tiny_lm()
    x = torch.randint(model.hparams.vocab_size, (2, 8))
    y = torch.randint(model.hparams.vocab_size, (2, 8))
    model._evaluate((x, y), model.val_loss, model.val_bits)
    nll = F.cross_entropy(model.net(x).flatten(0, 1), y.flatten())
    assert model.val_loss.compute().item() == pytest.approx(nll.item(), rel=1e-5)
    assert model.val_bits.compute().item() == pytest.approx(nll.item() / math.log(2), rel=1e-5)
    bpe = BPETokenizer.train(TEXT * 20 + "é€ü", 270)
    model = tiny_lm(tokenizer=bpe)
    ids = torch.tensor([bpe.encode(TEXT * 2)[:9]])
    model._evaluate((ids[:, :-1], ids[:, 1:]), model.val_loss, model.val_bits)
    total_nats = model.token_nll(ids[:, :-1], ids[:, 1:]).sum()
    num_bytes = len(bpe.decode(ids[0, 1:].tolist()).encode())
    assert model.unit == "byte"
    assert model.val_bits.compute().item() == pytest.approx(total_nats.item() / math.log(2) / num_bytes, rel=1e-5)


def test_checkpoint_carries_the_tokenizer(tmp_path):
    model = tiny_lm()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    loaded = AutoregressiveLM.load_from_checkpoint(tmp_path / "lm.ckpt", weights_only=False)  # a partial in hparams
    assert loaded.tokenizer.to_json() == model.tokenizer.to_json()
    assert torch.equal(loaded.net.wte.weight, model.net.wte.weight)


def test_a_tokenizer_of_another_size_is_refused():
    model = tiny_lm()
    with pytest.raises(ValueError, match="tokens but the model was built for"):
        model.set_tokenizer(CharTokenizer.from_text("ab"))


def test_configure_model_shards_blocks_with_fsdp2_and_keeps_the_state_dict(monkeypatch, tmp_path):
    """One gloo process on a (1, 1) mesh, as ModelParallelStrategy builds: the blocks and the root become FSDP2
    units, the loss and gradients are the unsharded model's, and the gathered state dict has the same keys."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29517")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = tiny_lm()
        sharded = tiny_lm()
        sharded.load_state_dict(plain.state_dict())
        sharded._device_mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        sharded.configure_model()
        assert isinstance(sharded.net, FSDPModule) and all(isinstance(b, FSDPModule) for b in sharded.net.blocks)
        x = torch.randint(0, 5, (2, 8))
        losses = [F.cross_entropy(m(x).flatten(0, 1), x.flatten()) for m in (plain, sharded)]
        for loss in losses:
            loss.backward()
        torch.testing.assert_close(losses[1], losses[0])
        expected = dict(plain.named_parameters())
        for name, param in sharded.named_parameters():  # DTensors: gather each gradient
            torch.testing.assert_close(param.grad.full_tensor(), expected[name].grad, msg=name)
        assert set(sharded.state_dict()) == set(plain.state_dict())
    finally:
        dist.destroy_process_group()
