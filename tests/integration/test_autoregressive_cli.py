"""The autoregressive family end to end through ``genlit``: fit, test, sample text, and its clear errors."""

import json
import math

import pytest
import torch

import genlit
from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import fit
from tests.integration.test_errors import assert_nothing_written, genlit_error

FEW = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2"]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, data_dir):
    return fit("autoregressive/gpt_shakespeare_char_cpu.yaml", tmp_path_factory.mktemp("gpt"), *FEW)


@pytest.fixture(scope="module")
def gpt_ckpt(gpt_run):
    return gpt_run / "checkpoints" / "last.ckpt"


def test_fit_links_vocabulary_and_context_and_stores_the_tokenizer(gpt_ckpt):
    ckpt = torch.load(gpt_ckpt, weights_only=False)
    assert ckpt["global_step"] == 4 and "genlit_tokenizer" in ckpt
    hparams = ckpt["hyper_parameters"]
    assert hparams["vocab_size"] == 65 and hparams["block_size"] == 64  # linked from the DataModule


def test_fit_writes_text_samples(gpt_run):
    (path,) = (gpt_run / "samples").glob("step_*.txt")  # at the end of training (the period is 1000 steps)
    text = path.read_text(encoding="utf-8")
    assert text.count("--- sample") == 2 and text.count("ROMEO:") >= 2


def test_test_reports_loss_perplexity_and_bits_per_char(gpt_run, gpt_ckpt, tmp_path, capsys):
    args = ["test", "--config", str(gpt_run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--ckpt_path", str(gpt_ckpt), "--trainer.limit_test_batches", "2", "--trainer.logger", "false"]
    main(args + ["--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    for key in ("test/loss", "test/perplexity", "test/bits_per_char"):
        assert key in out, out


def test_sample_streams_text_and_writes_it(gpt_ckpt, tmp_path, capsys):
    out = tmp_path / "text" / "sample.txt"
    args = ["sample", "--ckpt", str(gpt_ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--out", str(out)]
    main(args + ["--top-k", "10", "--top-p", "0.9", "--temperature", "0.8", "--seed", "3"])
    printed = capsys.readouterr().out
    written = out.read_text(encoding="utf-8")
    assert written.startswith("ROMEO:") and len(written) == len("ROMEO:") + 30
    assert written in printed  # streamed to stdout as well
    main(args + ["--top-k", "10", "--top-p", "0.9", "--temperature", "0.8", "--seed", "3"])
    assert out.read_text(encoding="utf-8") == written  # the seed fixes the text


def test_several_samples_greedy(gpt_ckpt, tmp_path, capsys):
    out = tmp_path / "greedy.txt"
    main(["sample", "--ckpt", str(gpt_ckpt), "--num", "2", "--temperature", "0", "--max-new-tokens", "5",
          "--out", str(out)])  # fmt: skip
    text = out.read_text(encoding="utf-8")
    assert text.count("--- sample") == 2
    first, second = (part.split("\n", 1)[1] for part in text.split("--- sample ")[1:])
    assert first == second  # greedy decoding does not depend on the draw


@pytest.mark.parametrize(
    "extra, phrases",
    [
        (["--prompt", "ROMEO ✓"], ["'✓'", "65 characters"]),
        (["--top-k", "0"], ["top_k must be >= 1"]),
        (["--top-p", "1.5"], ["top_p must be in (0, 1]"]),
        (["--max-new-tokens", "0"], ["max_new_tokens must be >= 1"]),
        (["--sampler", "DDIMSampler"], ["sampling options of this AutoregressiveLM checkpoint are --prompt"]),
        (["--prompt", ""], ["prompt is empty"]),
    ],
)
def test_bad_sampling_options_are_one_clear_line(gpt_ckpt, tmp_path, capsys, extra, phrases):
    out_dir = tmp_path / "out"
    line = genlit_error(capsys, ["sample", "--ckpt", str(gpt_ckpt), "--out", str(out_dir / "s.txt"), *extra])
    for phrase in phrases:
        assert phrase in line, line
    assert_nothing_written(out_dir)


def test_text_options_on_an_image_checkpoint_are_refused(tmp_path, capsys):
    run = fit("gan/toy_ring8.yaml", tmp_path / "toy", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    args = ["sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", "4", "--out", str(tmp_path / "o.npz")]
    line = genlit_error(capsys, args + ["--prompt", "hi"])
    assert "--prompt needs a model that takes a prompt (a language model or TextDiffusion); this GAN takes none" in line
    assert "the sampling options of this GAN checkpoint are --truncation" in line


def test_block_size_longer_than_the_data_is_a_clear_error(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("a short text of a few words.\n" * 20, encoding="utf-8")
    args = ["fit", "--config", str(EXPERIMENTS / "autoregressive" / "gpt_shakespeare_char_cpu.yaml")]
    args += ["--data.init_args.source", str(text), "--data.init_args.block_size", "512"]
    args += ["--trainer.default_root_dir", str(tmp_path / "runs"), "--data.init_args.cache_dir", str(tmp_path / "c")]
    line = genlit_error(capsys, args)
    assert "block_size" in line and "512" in line


@pytest.mark.parametrize(
    "config", ["autoregressive/charrnn_shakespeare.yaml", "autoregressive/gpt_shakespeare_bpe.yaml"]
)
def test_rnn_and_bpe_recipes_fit_a_few_steps(config, tmp_path, data_dir):
    overrides = [*FEW, "--data.init_args.batch_size", "4"]
    run = fit(config, tmp_path, *overrides)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and "genlit_tokenizer" in ckpt


def test_evaluate_reports_perplexity_and_bits_per_char(gpt_ckpt, data_dir, tmp_path, capsys):
    out = tmp_path / "lm.eval.json"
    text = str(data_dir / "tinyshakespeare" / "input.txt")
    main(["evaluate", "--ckpt", str(gpt_ckpt), "--data", text, "--split", "test", "--out", str(out)])
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] / math.log(2))  # one char per token
    assert record["reference"]["num_tokens"] == (111_540 - 1) // 64 * 64  # every block of the 10% held out
    assert "bits_per_char" in capsys.readouterr().out
    assert genlit.evaluate(gpt_ckpt, text, split="test") == record  # the Python API: the same record
