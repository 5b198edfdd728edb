"""Text-to-image diffusion end to end through ``genlit``: fit on MNIST with generated captions, sample with
``--prompt`` and ``--guidance-scale`` from the checkpoint alone, and bad inputs as one clear line."""

import numpy as np
import pytest

from genlit.checkpoints import load_family
from genlit.cli import main
from tests.conftest import EXPERIMENTS
from tests.integration.helpers import error_line, fit, mnist_args

CONFIG = "diffusion/text2img_mnist.yaml"
# a small U-Net and text encoder and a few steps: the point is the plumbing, not the samples
FEW = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "16"]
SMALL = ["--model.init_args.net.init_args.channels", "8", "--model.init_args.net.init_args.groups", "4",
         "--model.init_args.text_encoder.init_args.dim", "16", "--model.init_args.text_encoder.init_args.depth", "1",
         "--model.init_args.sampler.init_args.num_steps", "2", "--model.init_args.schedule.init_args.num_steps", "50",
         "--data.init_args.train_limit", "256"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_dir):
    return fit(CONFIG, tmp_path_factory.mktemp("t2i"), *mnist_args(mnist_dir), *FEW, *SMALL)


def sample(run, out, *options, num="4"):
    main(["sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num", num, "--out", str(out), *options])
    return np.load(out)


def test_the_checkpoint_keeps_the_tokenizer(run):
    assert list((run / "samples").glob("*.png"))  # the grid drew the model's default prompts
    model = load_family(run / "checkpoints" / "last.ckpt")
    assert model.tokenizer is not None and model.tokenizer.vocab_size == model.hparams.vocab_size
    assert model.tokenizer.decode(model.tokenizer.encode("four minus one")) == "four minus one"


def test_sample_with_a_prompt_and_guidance(run, tmp_path):
    arrays = sample(run, tmp_path / "s.npz", "--prompt", "a handwritten three", "--guidance-scale", "4")
    assert arrays["arr_0"].shape == (4, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    listed = sample(run, tmp_path / "l.npz", "--prompt", '["a handwritten three", "two plus two"]', "--batch-size",
                    "1", "--guidance-scale", "4")  # fmt: skip
    np.testing.assert_array_equal(listed["arr_0"][0], arrays["arr_0"][0])  # sample 0: the same prompt and noise
    assert (listed["arr_0"][1] != arrays["arr_0"][1]).any()  # sample 1: another prompt


def test_bad_prompts_are_one_clear_line(run, capsys):
    ckpt = str(run / "checkpoints" / "last.ckpt")
    long = " ".join(["three"] * 17)  # the configured word tokens read 16 words
    err = error_line(capsys, "sample", "--ckpt", ckpt, "--num", "2", "--out", "x.npz", "--prompt", long)
    assert "has 17 tokens, more than the 16 this model reads; shorten it" in err
    err = error_line(capsys, "sample", "--ckpt", ckpt, "--num", "2", "--out", "x.npz", "--label", "3")
    assert "class-conditional" in err


def test_an_unknown_text_encoder_is_one_clear_line(capsys, tmp_path, mnist_dir):
    err = error_line(capsys, "fit", "--config", str(EXPERIMENTS / CONFIG), *mnist_args(mnist_dir),
                     "--trainer.default_root_dir", str(tmp_path), "--model.init_args.text_encoder",
                     "genlit.nets.text_encoder.NoSuchEncoder")  # fmt: skip
    assert "text_encoder" in err


def test_word_tokens_read_unknown_words(run, tmp_path):
    model = load_family(run / "checkpoints" / "last.ckpt")
    assert type(model.tokenizer).__name__ == "WordTokenizer" and model.hparams.token_dropout == 0.1
    assert model.tokenizer.encode("someone wrote a seven")[:2] == [model.tokenizer.unk_id] * 2
    arrays = sample(run, tmp_path / "s.npz", "--prompt", "someone wrote a seven!", "--guidance-scale", "2")
    assert arrays["arr_0"].shape == (4, 28, 28, 1)


def test_character_tokens_refuse_unknown_characters(tmp_path, mnist_dir, capsys):
    run = fit(CONFIG, tmp_path, *mnist_args(mnist_dir), *FEW, *SMALL, "--data.init_args.tokenizer", "char",
              "--data.init_args.block_size", "48", "--model.init_args.token_dropout", "0",
              "--model.init_args.token_insertion", "0")  # fmt: skip
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert type(load_family(ckpt).tokenizer).__name__ == "CharTokenizer"
    err = error_line(capsys, "sample", "--ckpt", ckpt, "--num", "2", "--out", "x.npz", "--prompt", "a three!")
    assert "outside the model's vocabulary" in err
