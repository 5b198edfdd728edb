"""Anomaly scores (genlit.metrics.anomaly, genlit.families.anomaly): the PNG code length, each score against a hand
computation, the AUROC of each, the likelihood ratio of a model against itself, and the input mutation that trains a
background model."""

import math
from functools import partial

import pytest
import torch

from genlit import VAE
from genlit.data.images import augment_images
from genlit.families.pixelcnn import PixelCNN
from genlit.metrics.anomaly import SCORES, AnomalyAUROC, anomaly_scores, class_marginal, png_bits
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder
from genlit.nets.pixelcnn import GatedPixelCNN

SHAPE = (1, 8, 8)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 2 - 1  # (n, 1, 8, 8)


def test_png_bits_is_shorter_for_simpler_images_and_bilevel_ones():
    blank = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    noise = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    bits_blank, bits_noise = png_bits(blank), png_bits(noise)
    assert bits_blank.dtype == torch.float64 and bits_blank.shape == (2,)
    assert (bits_blank < bits_noise).all() and (bits_noise > 28 * 28 * 8 * 0.9).all()  # noise hardly compresses
    binary = (noise > 127).to(torch.uint8)  # (2, 1, 28, 28) in {0, 1}
    assert (png_bits(binary, bilevel=True) < png_bits(binary * 255)).all()  # 1-bit PNG: about 1 bit per pixel
    colour = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    assert png_bits(colour).shape == (1,)
    with pytest.raises(ValueError, match="uint8 images"):
        png_bits(blank.float())
    with pytest.raises(ValueError, match="1 if bilevel"):
        png_bits(colour, bilevel=True)


def test_scores_match_hand_computations():
    nll = torch.tensor([100.0, 50.0])  # nats per image of 4 values
    background = torch.tensor([90.0, 60.0])
    compressed = torch.tensor([80.0, 40.0], dtype=torch.float64)
    recon = torch.tensor([0.1, 0.2])
    scores = anomaly_scores(nll, 4, background_nll=background, compressed_bits=compressed, reconstruction_error=recon)
    assert list(scores) == list(SCORES[:4])
    bits = nll / math.log(2) / 4
    torch.testing.assert_close(scores["nll"], bits)
    torch.testing.assert_close(scores["likelihood_ratio"], (nll - background) / math.log(2) / 4)
    torch.testing.assert_close(scores["complexity"], bits - compressed.float() / 4)
    torch.testing.assert_close(scores["reconstruction"], recon)
    assert list(anomaly_scores(nll, 4)) == ["nll"]  # a score without its input is left out


def test_auroc_of_each_score_ranks_held_out_examples():
    metric = AnomalyAUROC()
    is_anomaly = torch.tensor([0, 0, 1, 1])
    # one batch inside [0, 1] and one far outside: the squash is the same for both, so the ranking is kept
    metric.add_scores({"nll": torch.tensor([0.1, 0.2, 0.3, 0.4]), "complexity": torch.tensor([0.4, 0.3, 0.2, 0.1])},
                      is_anomaly)  # fmt: skip
    metric.add_scores({"nll": torch.tensor([5.0, 6.0, 7.0, 8.0]), "complexity": torch.tensor([-1.0, -2, -3, -4])},
                      is_anomaly)  # fmt: skip
    # normal 0.1 0.2 5 6 against anomalous 0.3 0.4 7 8: 12 of the 16 pairs ordered
    assert float(metric["nll"].compute()) == pytest.approx(0.75)
    assert float(metric["complexity"].compute()) == pytest.approx(0.25)  # the mirror image


def tiny_pixelcnn(**kwargs) -> PixelCNN:
    net = partial(GatedPixelCNN, channels=8, layers=2, head_channels=8)
    return PixelCNN(net, data_shape=SHAPE, **kwargs).eval()


def tiny_vae(**kwargs) -> VAE:
    nets = {"hidden": 16}
    return VAE(partial(MLPEncoder, **nets), partial(MLPDecoder, **nets), data_shape=SHAPE, latent_dim=3,
               iw_samples=4, **kwargs).eval()  # fmt: skip


@pytest.mark.parametrize("make", [tiny_pixelcnn, tiny_vae], ids=["pixelcnn", "vae"])
def test_the_likelihood_ratio_of_a_model_against_itself_is_zero(make):
    torch.manual_seed(0)
    model = make()
    model.hparams.anomaly_background = "itself"  # a path is needed only to load; hand the model in directly
    model._background_cache.append(model)
    with torch.no_grad():
        scores = model.anomaly_scores(images(), batch_idx=3)
    assert torch.equal(scores["likelihood_ratio"], torch.zeros(6))
    expected = {"nll", "likelihood_ratio", "complexity"} | ({"reconstruction"} if isinstance(model, VAE) else set())
    assert set(scores) == expected


def test_evaluation_draws_follow_the_batch_index():
    torch.manual_seed(0)
    model = tiny_vae()
    with torch.no_grad():
        first, again, other = (model.nll(images(), batch_idx=b) for b in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_bernoulli_models_compress_the_binarized_image_they_score():
    model = tiny_pixelcnn()
    scored, bilevel = model.scored_images(images(), batch_idx=0)
    assert bilevel and scored.dtype == torch.uint8 and set(scored.unique().tolist()) <= {0, 1}
    torch.testing.assert_close(scored.float(), model.prepare(images(), "test", 0)[1])
    eight_bit, bilevel = tiny_pixelcnn(likelihood="categorical").scored_images(images())
    assert not bilevel and eight_bit.shape == (6, *SHAPE) and eight_bit.max() > 1


def test_a_background_of_another_family_is_one_clear_line(tmp_path, monkeypatch):
    model = tiny_pixelcnn(anomaly_background=str(tmp_path / "missing.ckpt"))
    with pytest.raises(FileNotFoundError, match="anomaly_background .*missing.ckpt: no such checkpoint"):
        model.background_model()
    (tmp_path / "vae.ckpt").write_bytes(b"")
    monkeypatch.setattr("genlit.families.anomaly.load_family", lambda path, needs: tiny_vae())
    model.hparams.anomaly_background = str(tmp_path / "vae.ckpt")
    with pytest.raises(ValueError, match="holds a VAE .* it must be a PixelCNN"):
        model.background_model()


def test_mutation_replaces_the_given_share_of_pixels_by_8_bit_colours():
    x = torch.full((64, 3, 16, 16), -1.0)
    assert torch.equal(augment_images(x, mutation_rate=0.0), x)
    mutated = augment_images(x, mutation_rate=0.25, generator=torch.Generator().manual_seed(0))  # (64, 3, 16, 16)
    changed = (mutated != x).any(1)  # (64, 16, 16) pixels with any channel changed
    assert changed.float().mean().item() == pytest.approx(0.25 * 255 / 256, abs=0.02)
    levels = (mutated + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)  # 8-bit colours in model space


def test_class_marginal_and_ambiguity_match_bayes_rule():
    class_nll = torch.tensor([[10.0, 20.0], [10.0, 21.0], [12.0, 40.0]])  # (K=3, B=2) nats
    nll, ambiguity = class_marginal(class_nll)
    likelihoods = torch.exp(-class_nll.double())  # (3, 2)
    torch.testing.assert_close(nll.double(), -torch.log(likelihoods.mean(0)))
    posterior = likelihoods / likelihoods.sum(0)  # (3, 2) p(y | x), uniform prior
    best = posterior.max(0).values
    torch.testing.assert_close(ambiguity.double(), torch.log1p(-best) - torch.log(best))
    assert ambiguity[0] > ambiguity[1]  # two classes explain the first image equally: more ambiguous
    far = class_marginal(torch.tensor([[0.0], [500.0]]))[1]  # p(y*|x) = 1 - 1e-217: no underflow to -inf
    assert torch.isfinite(far).all() and far.item() == pytest.approx(-500.0)
    with pytest.raises(ValueError, match="K >= 2 classes"):
        class_marginal(torch.zeros(1, 4))


def test_a_conditional_model_scores_without_labels_over_its_trained_classes():
    torch.manual_seed(0)
    model = tiny_pixelcnn(conditional=True, num_classes=4)
    model._trained_classes = [0, 1, 3]  # as a checkpoint of a run without the class 2 records it
    x = images()
    with torch.no_grad():
        scores = model.anomaly_scores(x, batch_idx=1)
        class_nll = torch.stack([model.nll(x, torch.full((6,), c), batch_idx=1) for c in (0, 1, 3)])  # (3, 6)
    assert set(scores) == {"nll", "complexity", "class_ambiguity"}
    nll, ambiguity = class_marginal(class_nll)
    torch.testing.assert_close(scores["class_ambiguity"], ambiguity)
    torch.testing.assert_close(scores["nll"], nll / (SHAPE[1] * SHAPE[2] * math.log(2)))
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["genlit_trained_classes"] == [0, 1, 3]


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_mutation_rate_outside_0_1_is_one_clear_line(rate):
    from genlit.data.images import ImageDataModule

    with pytest.raises(ValueError, match=r"mutation_rate .* must lie in \[0, 1\)"):
        ImageDataModule("any/dataset", mutation_rate=rate)
