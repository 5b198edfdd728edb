"""The family contract (genlit.families.base), for every family and every experiment's model.

For each: samples have the documented shape and dtype; the same seed gives the same samples; sample i does
not depend on the batch size (1, 7, all), on the split of the indices between two ranks, or on the module's
train/eval mode before the call (and that mode is restored). The toy families have dropout, random weights
and stochastic samplers, so a sampler left in train mode or noise shared across a batch would show.
"""

from functools import partial

import pytest
import torch

from genlit.cli import GenlitCLI
from genlit.data.tokenizers import CharTokenizer
from genlit.diffusion import DDPMSampler, HeunSampler, LinearSchedule
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.base import GenerativeFamily
from genlit.families.diffusion import Diffusion
from genlit.families.edm import EDM
from genlit.families.flow import Flow
from genlit.families.gan import GAN
from genlit.families.pixelcnn import PixelCNN
from genlit.families.protocols import Translator
from genlit.families.vae import VAE
from genlit.families.vqvae import VQVAE
from genlit.nets.flows import MultiScaleFlow
from genlit.nets.gpt import GPT
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder
from genlit.nets.pixelcnn import GatedPixelCNN
from genlit.nets.unet import UNet
from genlit.nets.vqvae import VectorQuantizer, VQDecoder, VQEncoder
from genlit.seeding import rank_range
from tests.conftest import EXPERIMENTS, autoencoder_checkpoint, code_file, speaker_corpora
from tests.unit.test_cyclegan import check_translator

NUM = 9  # samples per check: batch sizes 1, 7 and 9 split them differently


def perturbed(model: GenerativeFamily) -> GenerativeFamily:
    """Random weights everywhere, EMA included (zero-initialised output layers would hide bugs)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def toy_gan():
    nets = partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=16)
    return GAN(*nets, data_shape=(2,), num_classes=8, conditional=True)


def toy_vae():
    nets = partial(MLPEncoder, hidden=16), partial(MLPDecoder, hidden=16)
    return VAE(*nets, data_shape=(1, 8, 8), num_classes=3, conditional=True, latent_dim=4)


def toy_diffusion():
    net = partial(UNet, channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4, dropout=0.3)
    return Diffusion(net, (1, 8, 8), num_classes=3, conditional=True, schedule=LinearSchedule(20), ema_decay=0.5)


def toy_edm():
    net = partial(UNet, channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4, dropout=0.3)
    return EDM(net, (1, 8, 8), num_classes=3, conditional=True, ema_decay=0.5)


def toy_flow():
    return Flow(partial(MultiScaleFlow, levels=2, steps=2, hidden=8), (1, 8, 8))


def toy_lm():
    tokenizer = CharTokenizer.from_text("to be, or not to be: that is the question.\n")
    model = AutoregressiveLM(partial(GPT, n_layer=2, n_head=2, n_embd=16, dropout=0.3), tokenizer.vocab_size, 8)
    model.set_tokenizer(tokenizer)
    return model


def toy_vqvae():
    encoder = partial(VQEncoder, width=8, res_blocks=1, res_hidden=4)
    decoder = partial(VQDecoder, width=8, res_blocks=1, res_hidden=4)
    return VQVAE(encoder, decoder, partial(VectorQuantizer, num_codes=16), data_shape=(1, 8, 8), embedding_dim=4)


def toy_pixelcnn():
    net = partial(GatedPixelCNN, channels=12, layers=2, first_kernel_size=3, head_channels=12)
    return PixelCNN(net, (3, 4, 4), num_classes=3, conditional=True, likelihood="categorical", ema_decay=0.5)


TOYS = {
    "gan": toy_gan,
    "vae": toy_vae,
    "diffusion": toy_diffusion,
    "edm": toy_edm,
    "flow": toy_flow,
    "autoregressive": toy_lm,
    "pixelcnn": toy_pixelcnn,
    "vqvae": toy_vqvae,
}
GENERATIVE_EXPERIMENTS = sorted(
    p
    for p in EXPERIMENTS.rglob("*.yaml")
    if p.parent.name != "evaluators" and "genlit.families.autoencoder." not in p.read_text()  # not samplers
)


def experiment_model(config, data_dir, tmp_path, monkeypatch) -> GenerativeFamily:
    """The model an experiment builds (data shape, classes, vocabulary linked from its DataModule)."""
    monkeypatch.chdir(tmp_path)
    speaker_corpora(config, tmp_path, data_dir)  # the text transfer experiments' corpora
    args = ["--config", str(config)]
    if "ImageDataModule" in config.read_text():
        args += ["--data.init_args.dataset", str(data_dir / "mnist")]
    if "TextDataModule" in config.read_text():
        args += ["--data.init_args.cache_dir", str(tmp_path / "cache")]
    if "TokenSequenceDataModule" in config.read_text():  # a prior over a VQ-VAE's codes
        args += ["--data.init_args.source", str(code_file(tmp_path))]
    if "genlit.families.latent_diffusion." in config.read_text():  # a frozen first stage given by path
        args += ["--model.init_args.autoencoder", str(autoencoder_checkpoint(tmp_path))]
    cli = GenlitCLI(args=args, run=False)
    if getattr(cli.datamodule, "tokenizer", None) is not None:  # a language model gets its tokenizer at setup
        cli.model.set_tokenizer(cli.datamodule.tokenizer)
    return cli.model


def fast_options(model: GenerativeFamily) -> dict:
    """Options that keep each draw short: a few stochastic denoising steps, a few tokens."""
    names = model.sample_options()
    stochastic = HeunSampler(3, churn=10) if isinstance(model, EDM) else DDPMSampler(3)
    options = {"sampler": stochastic} if "sampler" in names else {}
    return options | ({"max_new_tokens": 5} if "max_new_tokens" in names else {})


def same(a, b) -> bool:
    if isinstance(a, list):
        return a == b
    # CPU convolutions and matmuls sum in an order that depends on the batch size (differences of ~1e-6 per op,
    # grown by a few sampler steps with guidance); other noise would differ by O(1)
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-3, rtol=0)


def check_contract(model: GenerativeFamily) -> None:
    options = fast_options(model)
    draw = partial(model.sample_many, seed=3, **options)
    reference = draw(range(NUM), batch_size=NUM)
    if isinstance(reference, list):
        assert len(reference) == NUM and all(isinstance(text, str) for text in reference)
    elif not reference.is_floating_point():  # token ids of a model without a tokenizer (a prior over codes)
        length = options.get("max_new_tokens", model.hparams.block_size)
        assert reference.shape == (NUM, length) and reference.dtype == torch.int64
        assert 0 <= reference.min() and reference.max() < model.bos_id
    else:
        assert reference.shape == (NUM, *model.data_shape) and reference.dtype == torch.float32
    assert same(draw(range(NUM), batch_size=NUM), reference)  # same seed, same samples
    assert not same(model.sample_many(range(NUM), seed=4, **options), reference)  # another seed, others
    for batch_size in (1, 7):
        assert same(draw(range(NUM), batch_size=batch_size), reference), f"batch size {batch_size}"
    ranks = [draw(range(*rank_range(NUM, rank, 2))) for rank in (0, 1)]
    joined = ranks[0] + ranks[1] if isinstance(reference, list) else torch.cat(ranks)
    assert same(joined, reference)  # two ranks drawing disjoint indices
    for mode in (True, False):
        model.train(mode)
        assert same(draw(range(NUM)), reference), f"after train({mode})"
        assert model.training == mode and all(m.training == mode for m in model.modules())


@pytest.mark.parametrize("family", sorted(TOYS))
def test_every_family_keeps_the_contract(family):
    check_contract(perturbed(TOYS[family]()))


@pytest.mark.parametrize(
    "config", GENERATIVE_EXPERIMENTS, ids=[str(c.relative_to(EXPERIMENTS)) for c in GENERATIVE_EXPERIMENTS]
)
def test_every_experiment_model_keeps_the_contract(config, data_dir, tmp_path, monkeypatch):
    model = perturbed(experiment_model(config, data_dir, tmp_path, monkeypatch))
    if isinstance(model, Translator):  # translates instead of sampling (CycleGAN): the translator's contract
        return check_translator(model)
    check_contract(model)


def test_labels_are_balanced_by_index_and_checked():
    model = toy_gan()
    assert model.sample_labels(torch.tensor([0, 7, 8, 17])).tolist() == [0, 7, 0, 1]
    with pytest.raises(ValueError, match=r"labels must be 2 integers in \[0, 8\)"):
        model.sample(2, labels=[0, 8])
    with pytest.raises(ValueError, match="unconditional; sample it without labels"):
        toy_lm().sample(1, labels=[0])


def test_unknown_or_bad_options_name_the_allowed_ones():
    with pytest.raises(ValueError, match="GAN has no sampling option sampler; its options: truncation"):
        toy_gan().sample(2, sampler=DDPMSampler(3))
    with pytest.raises(ValueError, match="its options: prompt, max_new_tokens, temperature, top_k, top_p"):
        toy_lm().sample(1, steps=3)
    with pytest.raises(ValueError, match="guidance_scale needs a class-conditional"):
        toy = partial(UNet, channels=8, channel_mults=(1,), attention_resolutions=(), groups=4)
        Diffusion(toy, (1, 8, 8)).sample(1, guidance_scale=2.0)
