"""The masked language model end to end through ``genlit``: fit a tiny BERT, test it, fill masks, and its clear
errors. (Every config under experiments/masked_lm instantiates in tests/test_experiments.py, which takes every
experiments/**/*.yaml.)"""

import pytest
import torch

from genlit.cli import main
from tests.integration.helpers import fit
from tests.integration.test_errors import assert_nothing_written, genlit_error

TINY = ["--model.init_args.net.init_args.n_layer", "1", "--model.init_args.net.init_args.n_embd", "32",
        "--model.init_args.pll_blocks", "2", "--data.init_args.batch_size", "4"]  # fmt: skip
FEW = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2"]
PREFIX = "To be, or not to "


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, data_dir):
    return fit("masked_lm/bert_shakespeare_char.yaml", tmp_path_factory.mktemp("bert"), *FEW, *TINY)


@pytest.fixture(scope="module")
def bert_ckpt(bert_run):
    return bert_run / "checkpoints" / "last.ckpt"


def test_fit_links_the_vocabulary_with_the_mask_and_writes_filled_samples(bert_run, bert_ckpt):
    ckpt = torch.load(bert_ckpt, weights_only=False)
    assert ckpt["global_step"] == 4 and '"mask": true' in ckpt["genlit_tokenizer"]
    hparams = ckpt["hyper_parameters"]
    assert hparams["vocab_size"] == 66 and hparams["block_size"] == 64  # 65 characters and [MASK]
    (path,) = (bert_run / "samples").glob("step_*.txt")  # TextSamples at the end of training
    text = path.read_text(encoding="utf-8")
    assert text.count("--- sample") == 2 and text.count("ROMEO:\n" + PREFIX) == 2 and "[MASK]" not in text


def test_test_reports_loss_accuracy_and_pseudo_likelihood(bert_run, bert_ckpt, tmp_path, capsys):
    args = ["test", "--config", str(bert_run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--ckpt_path", str(bert_ckpt), "--trainer.limit_test_batches", "1", "--trainer.logger", "false"]
    main(args + ["--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    for key in ("test/loss", "test/mask_accuracy", "test/pll_bits_per_char"):
        assert key in out, out


def test_sample_fills_the_masks_of_a_prompt(bert_ckpt, tmp_path, capsys):
    out = tmp_path / "filled.txt"
    args = ["sample", "--ckpt", str(bert_ckpt), "--prompt", PREFIX + "[MASK][MASK][MASK]", "--steps", "2"]
    main(args + ["--seed", "3", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert text.startswith(PREFIX) and len(text) == len(PREFIX) + 3 and "[MASK]" not in text
    assert text in capsys.readouterr().out  # printed as well
    main(args + ["--seed", "3", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == text  # the seed fixes the fill


def test_sample_keeps_the_characters_around_the_masks(bert_ckpt, tmp_path):
    out = tmp_path / "two.txt"
    main(["sample", "--ckpt", str(bert_ckpt), "--prompt", "To [MASK]e, or not[MASK]to be", "--num", "2",
          "--out", str(out)])  # fmt: skip
    body = out.read_text(encoding="utf-8")
    texts = [part.split("\n", 1)[1][:-1] for part in body.split("--- sample ")[1:]]  # each ends in a newline
    assert len(texts) == 2
    for text in texts:
        assert len(text) == len("To be, or not to be") and text[:3] == "To " and text[4:13] == "e, or not"
        assert text[14:] == "to be"


def test_sample_generates_freely_with_a_length(bert_ckpt, tmp_path):
    out = tmp_path / "free.txt"
    main(["sample", "--ckpt", str(bert_ckpt), "--length", "10", "--steps", "3", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert len(text) == 10 and "[MASK]" not in text


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--prompt", "To be, or not to be"], "this prompt has none"),
        (["--prompt", "To [MASK]", "--length", "4"], "not both"),
        (["--steps", "0"], "steps must be >= 1"),
    ],
)
def test_bad_fill_options_are_one_clear_line(bert_ckpt, tmp_path, capsys, extra, phrase):
    out_dir = tmp_path / "out"
    line = genlit_error(capsys, ["sample", "--ckpt", str(bert_ckpt), "--out", str(out_dir / "s.txt"), *extra])
    assert phrase in line, line
    assert_nothing_written(out_dir)
