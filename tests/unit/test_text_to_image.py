"""Text-to-image diffusion: caption templates, the tokenizer, text encoders, cross-attention with padding, prompt
dropout and guidance on the text."""

import string

import pytest
import torch

from genlit.commands.errors import UsageError
from genlit.commands.options import add_sampling_arguments, new_parser, parse_args
from genlit.data.captions import (
    HELD_OUT_TEMPLATES,
    PAD,
    TRAIN_TEMPLATES,
    WordTokenizer,
    caption_alphabet,
    caption_digit,
    caption_for,
    caption_tokenizer_from_json,
    caption_vocabulary,
    captions_for,
    fill_template,
    held_out_captions,
    pack_texts,
)
from genlit.data.tokenizers import CharTokenizer, tokenizer_from_json
from genlit.diffusion import DDIMSampler, LinearSchedule
from genlit.families.diffusion import Diffusion
from genlit.families.text_to_image import TextDiffusion
from genlit.nets.dit import DiT
from genlit.nets.text_encoder import HFTextEncoder, TextConditioned, TextTransformer
from genlit.nets.unet import UNet

SHAPE = (1, 8, 8)


def _perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its (zero) initialisation, so every branch matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def _text_model(**kwargs) -> TextDiffusion:
    net = lambda shape, k, **kw: UNet(shape, k, channels=8, groups=4, attention_resolutions=(4,), **kw)  # noqa: E731
    tokenizer = CharTokenizer(caption_alphabet())
    encoder = lambda v, n: TextTransformer(v, n, dim=16, depth=1)  # noqa: E731
    model = TextDiffusion(net, encoder, SHAPE, vocab_size=tokenizer.vocab_size, block_size=24,
                          schedule=LinearSchedule(20), sampler=DDIMSampler(2), ema_decay=0, **kwargs)  # fmt: skip
    model.set_tokenizer(tokenizer)
    return model


# ------------------------------------------------------------------------------------------------ captions
def test_train_and_held_out_templates_are_disjoint_and_name_their_digit():
    assert not set(TRAIN_TEMPLATES) & set(HELD_OUT_TEMPLATES)
    for held_out, templates in ((False, TRAIN_TEMPLATES), (True, HELD_OUT_TEMPLATES)):
        for template in templates:
            for digit in range(10):
                for seed in range(3):
                    rng = __import__("random").Random(seed)
                    caption = fill_template(template, digit, rng, held_out)
                    assert caption_digit(caption) == digit, caption
    assert caption_digit("a thick pen") is None


def test_captions_are_deterministic_and_held_out_ones_come_from_held_out_templates():
    assert caption_for(7, 123, seed=4) == caption_for(7, 123, seed=4)
    assert len({caption_for(7, i) for i in range(200)}) > 20  # paraphrases and distractors vary
    train = {caption_for(3, i) for i in range(300)}
    held = held_out_captions(3) + held_out_captions(3, num=50)
    assert len(held_out_captions(3)) == len(HELD_OUT_TEMPLATES)
    assert not train & set(held)
    assert all(caption_digit(c) == 3 for c in held)


def test_tokenizer_round_trips_and_packs_with_padding():
    tokenizer = CharTokenizer(caption_alphabet())
    assert tokenizer_from_json(tokenizer.to_json()).chars == tokenizer.chars
    for caption in held_out_captions(8) + [caption_for(d, d) for d in range(10)]:
        assert tokenizer.decode(tokenizer.encode(caption)) == caption
    ids = pack_texts(tokenizer, ["two", "", "The Digit 7"], 12)  # (3, 12)
    assert ids.shape == (3, 12) and (ids[1] == PAD).all() and (ids[0, 3:] == PAD).all()
    assert tokenizer.decode(ids[2][ids[2] >= 0]) == "the digit 7"
    assert set(string.ascii_lowercase + string.digits) <= set(tokenizer.chars)
    with pytest.raises(ValueError, match="shorten it"):
        pack_texts(tokenizer, ["x" * 13], 12, truncate=False)


# ------------------------------------------------------------------------------------------------ encoders, nets
def test_word_tokenizer_knows_the_training_words_and_reads_others_as_unknown():
    tokenizer = WordTokenizer.train(caption_vocabulary())
    train = captions_for([d % 10 for d in range(500)])
    assert all(tokenizer.unk_id not in tokenizer.encode(c) for c in train)  # every training word is known
    assert tokenizer.decode(tokenizer.encode("The Digit 7 written with a felt-tip pen")) == (
        "the digit 7 written with a felt - tip pen"
    )
    unknown = set()
    for caption in held_out_captions(7) + held_out_captions(2):
        words = caption.replace(",", " ,").split()
        unknown |= {w for w, i in zip(words, tokenizer.encode(caption), strict=True) if i == tokenizer.unk_id}
    assert {"someone", "wrote", "times", "scribbled"} <= unknown and not unknown & {"seven", "7", "minus", "digit"}
    again = caption_tokenizer_from_json(tokenizer.to_json())
    assert again.vocab_size == tokenizer.vocab_size and again.encode("a red seven") == tokenizer.encode("a red seven")
    ids = pack_texts(tokenizer, ["a handwritten seven", ""], 6)  # (2, 6)
    assert (ids[0, :3] >= 0).all() and (ids[0, 3:] == PAD).all() and (ids[1] == PAD).all()


def test_text_transformer_ignores_padded_ids():
    encoder = _perturb(TextTransformer(10, 6, dim=16, depth=2))
    ids = torch.tensor([[1, 2, 3, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False, False, False]])
    out, full = encoder(ids, mask)  # (1, 7, 16): the start token first
    other, _ = encoder(torch.tensor([[1, 2, 3, 7, 8, 9]]), mask)
    assert full.tolist() == [[True, True, True, True, False, False, False]]
    torch.testing.assert_close(out[full], other[full])
    empty, empty_mask = encoder(ids, torch.zeros_like(mask))  # the empty prompt: the start token alone
    assert empty_mask.sum() == 1 and torch.isfinite(empty).all()


@pytest.mark.parametrize("backbone", [UNet, DiT], ids=["unet", "dit"])
def test_cross_attention_ignores_padded_context(backbone):
    kwargs = {"channels": 8, "groups": 4, "attention_resolutions": (4,)} if backbone is UNet else {"hidden_size": 16}
    net = _perturb(backbone(SHAPE, 0, context_dim=12, **kwargs))
    x, t = torch.randn(2, *SHAPE), torch.tensor([3, 15])
    context, mask = torch.randn(2, 5, 12), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]).bool()
    out = net(x, t, None, context, mask)
    changed = torch.where(mask[..., None], context, 100 * torch.randn(2, 5, 12))  # only padded positions change
    torch.testing.assert_close(net(x, t, None, changed, mask), out)
    assert not torch.allclose(net(x, t, None, context + mask[..., None], mask), out)  # real tokens matter
    with pytest.raises(ValueError, match="needs a context of shape"):
        net(x, t)


def test_class_conditional_nets_keep_their_parameters():
    """context_dim 0 (every existing config): no new parameters, so existing checkpoints load."""
    assert sum(p.numel() for p in UNet((1, 28, 28)).parameters()) == 720_001
    assert sum(p.numel() for p in DiT((1, 28, 28), 10).parameters()) == 707_428 + 1_056


def test_text_conditioned_net_depends_on_the_prompt():
    tokenizer = CharTokenizer(caption_alphabet())
    backbone = UNet(SHAPE, 0, channels=8, groups=4, attention_resolutions=(4,), context_dim=16)
    net = _perturb(TextConditioned(TextTransformer(tokenizer.vocab_size, 24, dim=16, depth=1), backbone))
    x, t = torch.randn(2, *SHAPE), torch.tensor([5, 5])
    ids = pack_texts(tokenizer, ["a handwritten three", "the digit 8"], 24)
    out = net(x, t, ids)
    assert not torch.allclose(out[0], net(x[:1], t[:1], ids[1:])[0])
    torch.testing.assert_close(net(x[[0, 0]], t, ids[[0, 0]])[1], out[0])  # same prompt, same output


# ------------------------------------------------------------------------------------------------ the family
def test_prompt_dropout_replaces_that_share_by_the_empty_prompt():
    model = _text_model(prompt_dropout=0.3)
    ids = pack_texts(model.tokenizer, ["seven"] * 20_000, 24)
    out = model._training_labels(ids)
    empty = (out == PAD).all(dim=1)  # (N,)
    assert abs(empty.float().mean() - 0.3) < 0.02
    assert (out[~empty] == ids[0]).all()  # a kept caption is whole


def test_token_dropout_replaces_that_share_of_tokens_by_the_unknown_word():
    tokenizer = WordTokenizer.train(caption_vocabulary())
    net = lambda shape, k, **kw: UNet(shape, k, channels=8, groups=4, attention_resolutions=(4,), **kw)  # noqa: E731
    model = TextDiffusion(net, lambda v, n: TextTransformer(v, n, dim=16, depth=1), SHAPE, 0, tokenizer.vocab_size, 8,
                          prompt_dropout=0.0, token_dropout=0.25, ema_decay=0)  # fmt: skip
    model.set_tokenizer(tokenizer)
    ids = pack_texts(tokenizer, ["the digit seven"] * 20_000, 8)  # 3 words, 5 padding
    out = model._training_labels(ids)
    assert (out[:, 3:] == PAD).all()  # padding stays padding
    changed = out[:, :3] != ids[:, :3]
    assert (out[:, :3][changed] == tokenizer.unk_id).all() and abs(changed.float().mean() - 0.25) < 0.01
    with pytest.raises(ValueError, match="token_insertion need a tokenizer with an unknown-word token; CharTokenizer"):
        _text_model(token_dropout=0.1)
    with pytest.raises(ValueError, match=r"token_dropout and token_insertion must be in \[0, 1\)"):
        _text_model(token_insertion=1.0)


def test_token_insertion_shifts_the_caption_right_past_inserted_unknown_words():
    from genlit.families.text_to_image import insert_unknown

    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 8, PAD, PAD, PAD, PAD, PAD, PAD]] * 5000)  # 4 words, room for 6 more
    out = insert_unknown(ids, 0.3, unk=0)
    for row in out[:200]:
        real = row[row >= 0]
        assert real[real != 0].tolist() == [5, 6, 7, 8]  # the words, in order, with unknown words between
        assert (row[len(real) :] == PAD).all()  # still packed: padding after the tokens
    assert abs((out == 0).sum(1).float().mean() - 4 * 0.3) < 0.05  # 0.3 insertions per word
    assert torch.equal(insert_unknown(ids, 0.0, unk=0), ids)
    full = insert_unknown(torch.tensor([[5, 6, 7]] * 100), 0.5, unk=0)  # no room: the end is cut
    assert (full >= 0).all() and (full[:, 0] != PAD).all() and ((full == 5) | (full == 0))[:, 0].all()


def test_sampling_with_prompts_and_guidance():
    model = _text_model()
    _perturb(model.net)
    samples = model.sample(3, prompt="a handwritten three", guidance_scale=4.0, generator=torch.Generator())
    assert samples.shape == (3, *SHAPE)
    both = model.sample(4, prompt=["one", "two"], generator=torch.Generator().manual_seed(0))
    again = model.sample(4, prompt=["one", "two"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(both, again)
    guided = model.sample(2, prompt="one", guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(guided, model.sample(2, prompt="one", generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        model.sample(1, prompt="THREE!")
    with pytest.raises(ValueError, match="instead of labels"):
        model.sample(1, labels=[3])


def test_a_prompt_to_a_model_without_text_is_one_clear_line():
    model = Diffusion(lambda s, k: UNet(s, k, channels=8, groups=4, attention_resolutions=(4,)), SHAPE,
                      schedule=LinearSchedule(20), ema_decay=0)  # fmt: skip
    with pytest.raises(ValueError, match="no sampling option prompt"):
        model.sample(1, prompt="a handwritten three")
    parser = new_parser("genlit sample", "", model)
    add_sampling_arguments(parser, model)
    with pytest.raises(UsageError) as err:
        parse_args(parser, ["--num", "2", "--prompt", "a three"], model)
    assert "--prompt needs a model that takes a prompt" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ Hugging Face
def test_frozen_hf_encoders_from_tiny_random_configs():
    transformers = pytest.importorskip("transformers")
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    clip = HFTextEncoder(50, 8, config=transformers.CLIPTextConfig(vocab_size=50, max_position_embeddings=8, **tiny))
    t5 = HFTextEncoder(50, 8, config=transformers.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                           num_heads=2))  # fmt: skip
    ids = torch.tensor([[3, 4, 5, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    for encoder in (clip, t5):
        encoder.train()
        out, valid = encoder(ids, mask)
        assert out.shape == (2, 4, encoder.dim) and not encoder.model.training
        assert valid[1].tolist() == [True, False, False, False] and (out[1] == 0).all()  # the empty prompt
        assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="not supported; use a CLIP or T5"):
        HFTextEncoder(50, 8, config=transformers.BertConfig(vocab_size=50, **tiny))
    with pytest.raises(ValueError, match="vocabulary of 50 tokens"):
        HFTextEncoder(41, 8, config=transformers.CLIPTextConfig(vocab_size=50, **tiny))


def test_the_onnx_denoiser_takes_the_caption_ids(tmp_path):
    pytest.importorskip("onnxruntime")
    from genlit.commands.onnx_export import inference_session, onnx_graph_of, write_onnx

    model = _perturb(_text_model())
    record = write_onnx(model, tmp_path / "model.onnx")  # checks ONNX Runtime against torch on random inputs
    assert [i["name"] for i in record["inputs"]] == ["x_t", "t", "ids"]
    session = inference_session(tmp_path / "model.onnx")
    x, t = torch.randn(3, *SHAPE), torch.tensor([1, 5, 19])
    ids = pack_texts(model.tokenizer, ["a handwritten three", "", "two plus two"], 24)  # padded, and the empty prompt
    expected = onnx_graph_of(model).module(x, t, ids)
    got = session.run(None, {"x_t": x.numpy(), "t": t.numpy(), "ids": ids.numpy()})[0]
    assert abs(torch.from_numpy(got) - expected).max() < 1e-4
