"""One speaker's lines held out of a play (genlit.data.speakers), and TextDataModule's ``tokenizer_from``: the text
fine-tuning experiment's corpora and the pre-trained model's token ids on them."""

import json

import pytest
import torch

from genlit.data.speakers import (
    main,
    most_frequent_speaker,
    speaker_sizes,
    speeches,
    split_by_speaker,
    write_speaker_corpora,
)
from genlit.data.text import TextDataModule
from genlit.data.tokenizers import CHECKPOINT_KEY, CharTokenizer, build_tokenizer, read_tokenizer

PLAY = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?\n\n"
    "First Citizen:\nWe cannot, sir, we are undone already.\n\n\n"  # two blank lines, as Tiny Shakespeare has once
    "MENENIUS:\nI tell you, friends, most charitable care\nHave the patricians of you. Quiz!\n"
)


def test_speeches_are_split_at_blank_lines_with_their_speakers():
    found = speeches(PLAY)
    assert [name for name, _ in found] == ["First Citizen", "All", "MENENIUS", "First Citizen", "MENENIUS"]
    assert found[2][1] == "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?"
    assert speeches("no name here\nat all\n\nMENENIUS:\nHa.") == [
        (None, "no name here\nat all"),
        ("MENENIUS", "MENENIUS:\nHa."),
    ]


def test_the_most_frequent_speaker_is_the_one_with_most_characters():
    sizes = speaker_sizes(PLAY)
    assert sizes["MENENIUS"] > sizes["First Citizen"] > sizes["All"]
    assert most_frequent_speaker(PLAY) == "MENENIUS"
    with pytest.raises(ValueError, match="no speeches"):
        most_frequent_speaker("just prose\n\nand more prose\n")


def test_split_by_speaker_keeps_every_speech_once_on_one_side():
    own, others = split_by_speaker(PLAY, "MENENIUS")
    assert own.startswith("MENENIUS:\nWhy") and own.endswith("Quiz!\n") and own.count("MENENIUS:") == 2
    assert "MENENIUS" not in others and others.count("First Citizen:") == 2 and "All:\nSpeak" in others
    assert sorted((own + others).split()) == sorted(PLAY.split())  # nothing lost, nothing doubled
    with pytest.raises(ValueError, match="speaker 'ROMEO' has no speech.*MENENIUS, First Citizen"):
        split_by_speaker(PLAY, "ROMEO")


def test_write_speaker_corpora_writes_both_files(tmp_path, monkeypatch, capsys):
    source = tmp_path / "play.txt"
    source.write_text(PLAY, encoding="utf-8")
    corpora = write_speaker_corpora(source, folder=tmp_path / "out")
    assert corpora.speaker == "MENENIUS"
    assert (corpora.speaker_path.read_text(), corpora.others_path.read_text()) == split_by_speaker(PLAY, "MENENIUS")
    monkeypatch.setenv("GENLIT_CACHE_DIR", str(tmp_path / "cache"))
    cached = write_speaker_corpora(source, speaker="All")  # by default under genlit's cache, per text and speaker
    assert cached.speaker_path.parent.parent == tmp_path / "cache" / "speakers"
    assert cached.speaker_path.read_text() == "All:\nSpeak, speak.\n"
    main([str(source), "--speaker", "First Citizen", "--out", str(tmp_path / "cli")])
    assert "First Citizen: " in capsys.readouterr().out and (tmp_path / "cli" / "others.txt").is_file()
    with pytest.raises(FileNotFoundError, match="no such text file"):
        write_speaker_corpora(tmp_path / "missing.txt")


def test_the_tiny_shakespeare_split_keeps_every_character_in_the_others(data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    speaker = most_frequent_speaker(text)
    own, others = split_by_speaker(text, speaker)
    assert speaker == "GLOUCESTER" and 35_000 < len(own) < 45_000
    assert set(others) == set(text)  # a model pre-trained on the others reads the speaker's text


# -------------------------------------------------------------------------------------- tokenizer_from
def _data(tmp_path, source, **kwargs):
    return TextDataModule(str(source), block_size=4, batch_size=2, cache_dir=str(tmp_path / "cache"), **kwargs)


def test_tokenizer_from_gives_the_pretrained_ids_on_a_new_text(tmp_path):
    own, _ = split_by_speaker(PLAY, "MENENIUS")
    (tmp_path / "own.txt").write_text(own)
    (tmp_path / "pretrain.txt").write_text(PLAY + "Xyz\n")  # a vocabulary with more than own.txt's characters
    pretrain = _data(tmp_path, tmp_path / "pretrain.txt")
    (tmp_path / "tok.json").write_text(pretrain.tokenizer.to_json())
    assert _data(tmp_path, tmp_path / "own.txt").vocab_size != pretrain.vocab_size  # built from its own text
    finetune = _data(tmp_path, tmp_path / "own.txt", tokenizer_from=str(tmp_path / "tok.json"))
    assert finetune.tokenizer.to_json() == pretrain.tokenizer.to_json()
    finetune.setup("fit")
    assert finetune.tokenizer.decode(finetune.split_tokens("train")) == finetune.split_text("train")
    assert torch.equal(
        finetune.split_tokens("val"), torch.tensor(pretrain.tokenizer.encode(finetune.split_text("val")))
    )


def test_tokenizer_from_reads_checkpoints_and_exported_folders(tmp_path):
    tokenizer = CharTokenizer.from_text(PLAY)
    torch.save({"state_dict": {}, CHECKPOINT_KEY: tokenizer.to_json()}, tmp_path / "lm.ckpt")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "tokenizer.json").write_text(tokenizer.to_json())
    for path in (tmp_path / "lm.ckpt", tmp_path / "export"):
        assert read_tokenizer(path).to_json() == tokenizer.to_json()
    torch.save({"state_dict": {}}, tmp_path / "gan.ckpt")
    with pytest.raises(ValueError, match="gan.ckpt stores no tokenizer"):
        read_tokenizer(tmp_path / "gan.ckpt")
    with pytest.raises(ValueError, match="folder without tokenizer.json"):
        read_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.json: no such file"):
        read_tokenizer(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "words"}))
    with pytest.raises(ValueError, match="bad.json does not hold a genlit tokenizer"):
        read_tokenizer(tmp_path / "bad.json")


def test_tokenizer_from_must_fit_the_text_and_the_tokenizer_kind(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    (tmp_path / "small.json").write_text(CharTokenizer.from_text(PLAY.replace("Q", "q")).to_json())
    with pytest.raises(ValueError, match=r"small.json has no token for 1 character\(s\) of the text: 'Q'"):
        _ = _data(tmp_path, tmp_path / "play.txt", tokenizer_from=str(tmp_path / "small.json")).vocab_size
    (tmp_path / "bpe.json").write_text(build_tokenizer("bpe", PLAY * 5, 260).to_json())
    with pytest.raises(
        ValueError, match="holds a bpe tokenizer but --data.tokenizer is char; set --data.tokenizer bpe"
    ):
        _ = _data(tmp_path, tmp_path / "play.txt", tokenizer_from=str(tmp_path / "bpe.json")).vocab_size
    bpe = _data(tmp_path, tmp_path / "play.txt", tokenizer="bpe", tokenizer_from=str(tmp_path / "bpe.json"))
    assert bpe.vocab_size == 260
    masked = _data(tmp_path, tmp_path / "play.txt", mask_token=True, tokenizer_from=str(tmp_path / "bpe.json"),
                   tokenizer="bpe")  # fmt: skip
    assert masked.vocab_size == 261 and masked.tokenizer.mask_id == 260


def test_fine_tuning_a_language_model_on_other_token_ids_is_one_clear_line(tmp_path):
    from types import SimpleNamespace

    from genlit.families.tokenized import TokenizedModel
    from genlit.families.transfer import TransferOptions

    stored = tmp_path / "tokenizer.json"
    stored.write_text(CharTokenizer(sorted("abc ")).to_json(), encoding="utf-8")
    model = SimpleNamespace(transfer_options=TransferOptions(init_from=str(stored)))
    TokenizedModel._check_init_from_tokenizer(model, CharTokenizer(sorted("abc ")))  # the same ids: fine
    with pytest.raises(ValueError, match="another tokenizer than this data's.*--data.tokenizer_from"):
        TokenizedModel._check_init_from_tokenizer(model, CharTokenizer(sorted("abd ")))  # same size, other ids
    not_a_language_model = SimpleNamespace(transfer_options=TransferOptions(init_from=str(tmp_path / "gan.ckpt")))
    (tmp_path / "gan.ckpt").write_bytes(b"")
    # no tokenizer to compare (not a language model, or unreadable): init_from's own loading speaks for it
    TokenizedModel._check_init_from_tokenizer(not_a_language_model, CharTokenizer(sorted("abc ")))
