"""The VQ-VAE end to end through ``genlit``: fit a tiny VQ-VAE, encode the training split to codes, fit a GPT prior on
them, and sample images through prior and decoder (sample i the same for any batch size); one-line errors."""

import numpy as np
import pytest
import torch

from genlit.checkpoints import load_family
from genlit.cli import main
from genlit.imaging import to_uint8
from tests.integration.helpers import fit, mnist_args

TINY = [
    "--model.init_args.encoder.init_args.width", "16", "--model.init_args.encoder.init_args.res_blocks", "1",
    "--model.init_args.decoder.init_args.width", "16", "--model.init_args.decoder.init_args.res_blocks", "1",
    "--model.init_args.quantizer.init_args.num_codes", "32", "--model.init_args.embedding_dim", "8",
]  # fmt: skip
TINY_PRIOR = ["--model.init_args.net.init_args.n_layer", "1", "--model.init_args.net.init_args.n_embd", "16"]
FEW = ["--trainer.max_steps", "6", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir):
    """(the VQ-VAE's checkpoint, its training codes, the prior's checkpoint)."""
    root = tmp_path_factory.mktemp("vqvae")
    vqvae = fit("vqvae/vqvae_mnist.yaml", root / "vqvae", *mnist_args(mnist_dir), *TINY, *FEW,
                "--trainer.log_every_n_steps", "2", "--trainer.val_check_interval", "3")  # fmt: skip
    codes = root / "codes.npz"
    main(["encode", "--ckpt", str(vqvae / "checkpoints" / "last.ckpt"), "--split", "train", "--out", str(codes)])
    prior = fit("vqvae/vqvae_prior_mnist.yaml", root / "prior", "--data.init_args.source", str(codes), *TINY_PRIOR,
                *FEW)  # fmt: skip
    return vqvae / "checkpoints" / "last.ckpt", codes, prior / "checkpoints" / "last.ckpt"


def test_fit_logs_codebook_use_and_draws_reconstructions(runs):
    ckpt, _, _ = runs
    run = ckpt.parent.parent
    assert torch.load(ckpt, weights_only=False)["global_step"] == 6
    assert list((run / "latents").glob("reconstruction_step_*.png"))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/mse", "train/perplexity", "train/codes_used", "val/mse", "val/perplexity", "val/codes_used"):
        assert key in header, key


def test_encode_writes_the_training_split_as_code_grids(runs, mnist_dir):
    ckpt, codes, _ = runs
    arrays = np.load(codes)
    grids, labels = arrays["arr_0"], arrays["arr_1"]
    assert grids.shape == (8550, 7, 7) and grids.dtype == np.int64  # 9,000 train images less the 5% validation
    assert 0 <= grids.min() and grids.max() < 32 and labels.shape == (8550,) and set(labels) == set(range(10))
    model = load_family(ckpt).eval()
    from genlit.data.images import ImageDataModule, to_model_space

    data = ImageDataModule(str(mnist_dir))
    data.setup("fit")
    first = data.split_tensors("train", limit=4)[0]
    with torch.no_grad():
        assert torch.equal(model.encode_codes(to_model_space(first)), torch.from_numpy(grids[:4]))


def test_sample_chains_the_prior_and_the_decoder(runs, tmp_path):
    ckpt, _, prior = runs
    draws = {}
    for batch_size in ("5", "2"):
        out = tmp_path / f"images_{batch_size}.npz"
        main(["sample", "--ckpt", str(ckpt), "--prior", str(prior), "--num", "5", "--out", str(out),
              "--batch-size", batch_size])  # fmt: skip
        draws[batch_size] = np.load(out)["arr_0"]
    assert draws["5"].shape == (5, 28, 28, 1) and draws["5"].dtype == np.uint8
    assert (tmp_path / "images_5.png").is_file()
    # sample i depends only on (seed, i): CPU convolutions may round differently per batch size, by one level
    assert np.abs(draws["5"].astype(int) - draws["2"].astype(int)).max() <= 1
    # the images are the decoder's pictures of the prior's own samples 0..4 under the same seed
    main(["sample", "--ckpt", str(prior), "--num", "5", "--out", str(tmp_path / "codes.npz")])
    codes = torch.from_numpy(np.load(tmp_path / "codes.npz")["arr_0"])  # (5, 49)
    with torch.no_grad():
        decoded = to_uint8(load_family(ckpt).eval().decode_codes(codes)).numpy()
    assert np.abs(decoded.astype(int) - draws["5"].astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "0.5"], "temperature, top_k and top_p shape a learned prior's draws; give a prior"),
        (["--prior", "SELF"], "holds a VQVAE, not an autoregressive model of codes"),
    ],
)
def test_bad_prior_options_are_one_error_line(runs, tmp_path, capsys, extra, message):
    ckpt, _, _ = runs
    extra = [str(ckpt) if arg == "SELF" else arg for arg in extra]
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(ckpt), "--num", "2", "--out", str(tmp_path / "x.npz"), *extra])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error:")]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x.npz").exists()
