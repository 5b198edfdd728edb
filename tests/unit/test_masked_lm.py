"""The masked language model family: a bidirectional encoder, BERT's 80/10/10 corruption and span masking, the
loss taken at the chosen positions only, pseudo-log-likelihood against a hand loop, MaskGIT filling, the
``[MASK]`` token of both tokenizers, and the clear errors."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from genlit.data.tokenizers import MASK, BPETokenizer, CharTokenizer, tokenizer_from_json, with_mask_token
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.masked_lm import MaskedLM, choose_positions, cosine_remaining, mlm_corrupt
from genlit.nets.gpt import GPT
from genlit.seeding import SampleRNG

TEXT = "to be, or not to be: that is the question.\n"
ENCODER = partial(GPT, n_layer=2, n_head=2, n_embd=16, causal=False)


def char_tokenizer() -> CharTokenizer:
    return with_mask_token(CharTokenizer.from_text(TEXT))


def tiny_mlm(block_size=32, net=ENCODER, **kwargs) -> MaskedLM:
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    model = MaskedLM(net, tokenizer.vocab_size, block_size, **kwargs)
    model.set_tokenizer(tokenizer)
    return model.eval()


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


class ForwardLog:
    """Counts the net's forwards and the masks in each input (a forward hook)."""

    def __init__(self, model: MaskedLM) -> None:
        self.masks: list[torch.Tensor] = []  # (B,) masks per row of each forward's input
        model.net.register_forward_hook(lambda _, args, out: self.masks.append((args[0] == model.mask_id).sum(1)))


# ------------------------------------------------------------------------------------------------ the encoder
@pytest.mark.parametrize("causal", [False, True])
def test_encoder_attends_both_ways_and_the_causal_net_only_back(causal):
    torch.manual_seed(0)
    net = GPT(20, 12, n_layer=2, n_head=2, n_embd=16, causal=causal).eval()
    idx = torch.randint(0, 20, (2, 12))
    t = 7
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % 20
    with torch.no_grad():
        before, after = net(idx), net(changed)
    assert not torch.allclose(before[:, t:], after[:, t:])  # the changed token and those after it see it
    earlier = (before[:, :t] - after[:, :t]).abs().amax(-1)  # (B, t)
    if causal:
        assert torch.equal(before[:, :t], after[:, :t])
    else:
        assert (earlier > 1e-6).all()  # every earlier position sees the change


# ------------------------------------------------------------------------------------------------ corruption
def test_80_10_10_rule_proportions_on_a_large_batch():
    b, t, mask_id = 512, 128, 999
    tokens = torch.randint(0, mask_id, (b, t), generator=torch.Generator().manual_seed(1))
    inputs, chosen = mlm_corrupt(tokens, mask_id, generator=torch.Generator().manual_seed(2))
    k = round(0.15 * t)  # 19
    assert (chosen.sum(1) == k).all()  # the same share in every row, exactly
    assert torch.equal(inputs[~chosen], tokens[~chosen])  # unchosen positions untouched
    n = b * k
    got, want = inputs[chosen], tokens[chosen]
    masked = (got == mask_id).float().mean().item()
    random = ((got != mask_id) & (got != want)).float().mean().item()
    kept = (got == want).float().mean().item()
    same = 1 / mask_id  # a random replacement hits the original token with probability 1 / (V - 1)
    for share, p in ((masked, 0.8), (random, 0.1 * (1 - same)), (kept, 0.1 + 0.1 * same)):
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n), (share, p)  # 4 binomial sd
    replaced = got[(got != mask_id) & (got != want)]
    assert replaced.numel() > 0 and (replaced < mask_id).all() and (replaced >= 0).all()


def test_random_replacements_are_never_the_mask():
    tokens = torch.zeros(256, 64, dtype=torch.long)  # all token 0 of a vocabulary {0, 1, [MASK]=2}
    inputs, chosen = mlm_corrupt(tokens, 2, split=(0.0, 1.0, 0.0), generator=torch.Generator().manual_seed(0))
    assert not (inputs == 2).any()
    assert set(inputs[chosen].unique().tolist()) == {0, 1}  # both real tokens drawn, never the mask


def test_choose_positions_takes_at_least_one_per_row():
    chosen = choose_positions((8, 4), 0.05, torch.Generator().manual_seed(0), "cpu", None)
    assert (chosen.sum(1) == 1).all()  # round(0.2) = 0, raised to one


@pytest.mark.parametrize("max_span", [10, 4])
def test_span_masking_runs_are_geometric_with_mean_span_clipped_at_max_span(max_span):
    """At a low rate (2%) spans rarely touch, so each contiguous run is one span: ~3,400 runs, the mean's standard
    error ~0.04 (max 10) / 0.02 (max 4), and merged runs raise it by ~p E[L]^2 ~ 0.05; tolerance 0.2."""
    mean = 3.0
    chosen = choose_positions((1024, 512), 0.02, torch.Generator().manual_seed(0), "cpu", (mean, max_span))
    edges = F.pad(chosen, (1, 1)).int().diff(dim=1)  # +1 where a run starts, -1 just after it ends
    lengths = ((edges == -1).nonzero()[:, 1] - (edges == 1).nonzero()[:, 1]).float()
    q = 1 - 1 / mean  # P(L > j) = q^j
    clipped_mean = sum(q**j for j in range(max_span))
    assert len(lengths) > 3000
    assert abs(lengths.mean().item() - clipped_mean) < 0.2, (lengths.mean().item(), clipped_mean)
    assert abs((lengths == 1).float().mean().item() - 1 / mean) < 0.04  # geometric: P(L = 1) = 1 / mean (~5 sd)
    # clipped: every span longer than max_span lands on max_span, P(L = max) = q^(max - 1) (~5 sd)
    assert abs((lengths == max_span).float().mean().item() - q ** (max_span - 1)) < 0.04
    assert (lengths > max_span).float().mean().item() < 0.03  # only where two spans touch


def test_span_masking_share_is_a_little_under_the_rate():
    """The expected share is exact for independent starts and lengths: position i is covered unless no span
    starting at j <= i reaches it, ``1 - prod_j (1 - (rate / mean) q^(i - j))``; 0.137 for rate 0.15, mean 3,
    max 10, T 128 (overlaps take it under the rate). Tolerance: 5 standard errors of the mean row share."""
    rate, mean, longest, b, t = 0.15, 3.0, 10, 512, 128
    chosen = choose_positions((b, t), rate, torch.Generator().manual_seed(0), "cpu", (mean, longest))
    q = 1 - 1 / mean
    covered = [1 - math.prod(1 - rate / mean * q**j for j in range(min(i, longest - 1) + 1)) for i in range(t)]
    expected = sum(covered) / t
    rows = chosen.float().mean(1)  # (B,)
    assert 0.85 * rate < expected < rate
    assert abs(rows.mean().item() - expected) < 5 * rows.std().item() / math.sqrt(b), (rows.mean(), expected)


def test_span_masking_leaves_no_row_empty():
    # at 1% of 16 positions ~95% of the rows get no span: each must still get (exactly) one position
    chosen = choose_positions((256, 16), 0.01, torch.Generator().manual_seed(0), "cpu", (3.0, 10))
    counts = chosen.sum(1)
    assert (counts >= 1).all() and (counts == 1).float().mean() > 0.8


# ---------------------------------------------------------------------------------------------------- loss
def test_the_loss_is_taken_at_the_chosen_positions_only():
    model = tiny_mlm(block_size=32, mask_rate=0.25)
    tokens = torch.randint(0, model.mask_id, (4, 32), generator=torch.Generator().manual_seed(0))
    captured = []

    def keep(module, args, out):
        out.retain_grad()
        captured.append(out)

    model.net.register_forward_hook(keep)
    loss, correct, masked, count = model.masked_loss(tokens, torch.Generator().manual_seed(5))
    loss.backward()
    (logits,) = captured
    inputs, chosen = model.corrupt(tokens, torch.Generator().manual_seed(5))  # the same draw
    grad = logits.grad.abs().sum(-1)  # (B, T)
    assert (grad[~chosen] == 0).all() and (grad[chosen] > 0).all()
    assert loss.item() == pytest.approx(F.cross_entropy(logits[chosen], tokens[chosen]).item())
    assert torch.equal(masked, inputs == model.mask_id) and len(correct) == masked.sum()
    assert count == chosen.sum()


# ------------------------------------------------------------------------------------ pseudo-log-likelihood
@pytest.mark.parametrize("chunk", [512, 3])  # 3 does not divide B T = 14
def test_pseudo_nll_equals_a_hand_loop(chunk):
    model = tiny_mlm(block_size=8)
    tokens = torch.randint(0, model.mask_id, (2, 7), generator=torch.Generator().manual_seed(0))
    expected = torch.empty(2, 7)
    with torch.no_grad():
        for b in range(2):
            for t in range(7):
                x = tokens[b : b + 1].clone()
                x[0, t] = model.mask_id
                expected[b, t] = -F.log_softmax(model(x)[0, t], -1)[tokens[b, t]]
    torch.testing.assert_close(model.pseudo_nll(tokens, chunk=chunk), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- generation
def test_fill_keeps_unmasked_tokens_and_leaves_no_mask():
    model = tiny_mlm()
    ids = torch.tensor([model.tokenizer.encode("to be, [MASK][MASK] not[MASK]to [MASK]")] * 2)
    out = model.fill(ids, steps=3, rng=SampleRNG(range(2), 0))
    masked = ids == model.mask_id
    assert not (out == model.mask_id).any()
    assert torch.equal(out[~masked], ids[~masked])


def test_one_step_fills_every_mask_at_once_and_the_rounds_follow_the_cosine_schedule():
    model = tiny_mlm()
    log = ForwardLog(model)
    ids = torch.tensor([model.tokenizer.encode("[MASK]" * 9 + "or not" + "[MASK]")])  # 10 masks
    out = model.fill(ids, steps=1, temperature=0)
    assert len(log.masks) == 1  # one forward fills all ten
    logits = model(ids)[0]
    logits[:, model.mask_id] = float("-inf")
    masked = ids[0] == model.mask_id
    assert torch.equal(out[0, masked], logits.argmax(-1)[masked])  # greedy: each mask the argmax of that forward
    log.masks.clear()
    model.fill(ids, steps=4, rng=SampleRNG([0], 1))
    remaining = [int(10 * math.cos(math.pi / 2 * s / 4)) for s in range(4)]  # masks seen by round s + 1
    assert [m.item() for m in log.masks] == remaining == [10, 9, 7, 3]


def test_cosine_remaining_decreases_to_zero():
    total = torch.arange(0, 200)
    for steps in (1, 2, 5, 8, 13):
        counts = torch.stack([cosine_remaining(total, s, steps) for s in range(0, steps + 1)])  # (S + 1, N)
        assert torch.equal(counts[0], total)
        assert (counts.diff(dim=0) <= 0).all() and (counts[-1] == 0).all()


def test_the_same_seed_fills_each_row_the_same_whatever_the_batch():
    model = tiny_mlm()
    ids = torch.tensor([model.tokenizer.encode(TEXT[:20])] * 3)
    for row, positions in enumerate(([3, 4, 9], [0, 1, 2, 3, 17], [6, 12, 13, 19])):
        ids[row, positions] = model.mask_id
    together = model.fill(ids, steps=3, rng=SampleRNG(range(3), 11))
    for row in range(3):
        alone = model.fill(ids[row : row + 1], steps=3, rng=SampleRNG([row], 11))
        assert torch.equal(alone[0], together[row])
    assert not torch.equal(together, model.fill(ids, steps=3, rng=SampleRNG(range(3), 12)))  # seeds differ


def test_sample_fills_a_prompt_and_generates_freely():
    model = tiny_mlm()
    (text,) = model.sample(1, prompt="to be, or [MASK][MASK][MASK]", steps=2, generator=torch.Generator())
    assert text.startswith("to be, or ") and MASK not in text and len(text) == len("to be, or ") + 3
    texts = model.sample(2, length=5, steps=2, generator=torch.Generator().manual_seed(0))
    assert len(texts) == 2 and all(len(t) == 5 and MASK not in t for t in texts)


# ---------------------------------------------------------------------------------------------- tokenizers
def bpe_pair() -> tuple[BPETokenizer, BPETokenizer]:
    plain = BPETokenizer.train(TEXT * 20 + "é€ü", 300)
    return plain, with_mask_token(plain)


def test_mask_is_the_last_id_of_both_tokenizers_and_decodes_back():
    bpe, bpe_mask = bpe_pair()
    for tokenizer in (char_tokenizer(), bpe_mask):
        assert tokenizer.mask_id == tokenizer.vocab_size - 1
        text = "to be, [MASK] not[MASK][MASK] é" if tokenizer is bpe_mask else "to be, [MASK] not[MASK][MASK]"
        ids = tokenizer.encode(text)
        assert ids.count(tokenizer.mask_id) == 3 and tokenizer.encode(MASK) == [tokenizer.mask_id]
        assert tokenizer.decode(ids) == text
        assert tokenizer.unit_lengths()[tokenizer.mask_id] == 0
        again = tokenizer_from_json(tokenizer.to_json())
        assert again.mask_id == tokenizer.mask_id and again.encode(text) == ids and again.decode(ids) == text
    assert bpe.mask_id is None and CharTokenizer.from_text(TEXT).mask_id is None
    assert bpe_mask.vocab_size == bpe.vocab_size + 1 and char_tokenizer().vocab_size == len(set(TEXT)) + 1


def test_adding_the_mask_changes_neither_the_ids_nor_the_units_of_real_text():
    text = TEXT * 3 + "é€ü"
    bpe, bpe_mask = bpe_pair()
    char = CharTokenizer.from_text(text)
    for plain, masked, units in ((char, with_mask_token(char), len(text)), (bpe, bpe_mask, len(text.encode()))):
        ids = plain.encode(text)
        assert masked.encode(text) == ids
        assert sum(plain.unit_lengths()[i] for i in ids) == sum(masked.unit_lengths()[i] for i in ids) == units
    model = tiny_mlm()
    ids = torch.tensor([model.tokenizer.encode(TEXT[:16])])
    assert model.units_of(ids).sum().item() == 16  # bits per char divide by the real characters


# -------------------------------------------------------------------------------------------------- errors
def test_a_causal_net_is_refused():
    with pytest.raises(ValueError, match="needs a bidirectional net") as excinfo:
        MaskedLM(partial(GPT, n_layer=1, n_head=2, n_embd=16), 20, 8)
    assert "causal false" in one_line(excinfo)


def test_a_tokenizer_without_the_mask_is_refused():
    model = tiny_mlm()
    plain = CharTokenizer("".join(sorted(set(TEXT))) + "~")  # as many ids as the model, but no [MASK]
    assert plain.vocab_size == model.hparams.vocab_size
    with pytest.raises(ValueError, match=r"\[MASK\] token as its last id") as excinfo:
        model.set_tokenizer(plain)
    assert "--data.mask_token true" in one_line(excinfo)


def test_a_prompt_without_a_mask_is_refused():
    model = tiny_mlm()
    with pytest.raises(ValueError, match="this prompt has none") as excinfo:
        model.encode_prompt("to be, or not")
    one_line(excinfo)
    with pytest.raises(ValueError, match="this prompt has none"):
        model.check_sample_options(prompt="to be, or not")
    with pytest.raises(ValueError, match="this prompt has none"):
        model.sample(1, prompt="to be")


def test_a_gpt_refuses_a_mask_prompt():
    tokenizer = CharTokenizer.from_text(TEXT)
    model = AutoregressiveLM(partial(GPT, n_layer=1, n_head=2, n_embd=16), tokenizer.vocab_size, 8)
    model.set_tokenizer(tokenizer)
    with pytest.raises(ValueError, match=r"does not fill \[MASK\] tokens") as excinfo:
        model.encode_prompt("to be, or [MASK]")
    assert "masked language model" in one_line(excinfo)


@pytest.mark.parametrize(
    "options, phrase",
    [
        ({"prompt": "to [MASK]", "length": 4}, "not both"),
        ({"length": 0}, "length must lie in [1, block_size=32]"),
        ({"length": 33}, "length must lie in [1, block_size=32]"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"top_k": 0}, "top_k"),
        ({"max_new_tokens": 3}, "no sampling option max_new_tokens"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(options, phrase):
    with pytest.raises(ValueError) as excinfo:
        tiny_mlm().check_sample_options(**options)
    assert phrase in one_line(excinfo)


@pytest.mark.parametrize(
    "settings, phrase",
    [
        ({"mask_rate": 0.0}, "mask_rate must lie strictly between 0 and 1"),
        ({"mask_rate": 1.0}, "mask_rate must lie strictly between 0 and 1"),
        ({"mask_split": (0.8, 0.1, 0.2)}, "mask_split is three probabilities"),
        ({"mask_split": (1.2, -0.1, -0.1)}, "mask_split is three probabilities"),
        ({"mask_split": (0.9, 0.1)}, "mask_split is three probabilities"),
        ({"mean_span": 0.5}, "mean_span and max_span must be >= 1"),
    ],
)
def test_bad_masking_settings_are_one_line_errors(settings, phrase):
    with pytest.raises(ValueError) as excinfo:
        MaskedLM(ENCODER, 20, 8, **settings)
    assert phrase in one_line(excinfo)
