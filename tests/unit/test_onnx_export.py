"""The ONNX routes (genlit.commands.onnx_export): each family's sampling forward is exported with dynamic axes and
runs in ONNX Runtime as in torch (conditional GAN, conditional diffusion, VAE decoder, GPT at every length); a family
without a route, and a graph that does not match torch, are one clear line; the families named in the error are those
that have a route."""

import importlib
from functools import partial

import numpy as np
import pytest
import torch

import genlit
from genlit.commands import onnx_export
from genlit.commands.onnx_export import ONNX_FAMILIES, TOLERANCE, inference_session, onnx_graph_of, write_onnx
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.base import GenerativeFamily
from genlit.families.diffusion import Diffusion
from genlit.families.edm import EDM
from genlit.families.gan import GAN
from genlit.families.masked_lm import MaskedLM
from genlit.families.pixelcnn import PixelCNN
from genlit.families.protocols import OnnxExportable
from genlit.families.vae import VAE
from genlit.nets.gpt import GPT
from genlit.nets.mlp import MLPDiscriminator, MLPGenerator
from genlit.nets.mlp_vae import MLPDecoder, MLPEncoder
from genlit.nets.pixelcnn import GatedPixelCNN
from genlit.nets.unet import UNet


def perturbed(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def conditional_gan() -> GAN:
    nets = partial(MLPGenerator, latent_dim=4, hidden=16), partial(MLPDiscriminator, hidden=16)
    return GAN(*nets, data_shape=(2,), num_classes=3, conditional=True, ema_decay=0.9)


def conditional_diffusion() -> Diffusion:
    return Diffusion(partial(UNet, channels=8, groups=4), num_classes=3, conditional=True)


def conditional_edm() -> EDM:
    return EDM(partial(UNet, channels=8, groups=4), num_classes=3, conditional=True)


def conditional_vae() -> VAE:
    nets = partial(MLPEncoder, hidden=16), partial(MLPDecoder, hidden=16)
    return VAE(*nets, data_shape=(1, 4, 4), latent_dim=3, num_classes=3, conditional=True, likelihood="bernoulli")


def gpt() -> AutoregressiveLM:
    return AutoregressiveLM(partial(GPT, n_layer=2, n_head=2, n_embd=16), 11, 12)


@pytest.mark.parametrize("make, names, output", [
    (conditional_gan, ["z", "labels"], ["batch", 2]),
    (conditional_diffusion, ["x_t", "t", "labels"], ["batch", 1, 28, 28]),
    (conditional_edm, ["x", "log_sigma", "labels"], ["batch", 1, 28, 28]),
    (conditional_vae, ["z", "labels"], ["batch", 1, 4, 4]),
    (gpt, ["tokens"], ["batch", "sequence", 11]),
], ids=["gan-generator", "diffusion-denoiser", "edm-denoiser", "vae-decoder", "gpt-logits"])  # fmt: skip
def test_the_onnx_graph_runs_as_torch(make, names, output, tmp_path):
    model = perturbed(make())
    record = write_onnx(model, tmp_path / "model.onnx")
    assert [i["name"] for i in record["inputs"]] == names and record["outputs"][0]["shape"] == output
    assert record["check"]["max_abs_diff"] <= TOLERANCE and record["opset"] >= 18
    graph, session = onnx_graph_of(model), inference_session(tmp_path / "model.onnx")
    lengths = range(1, 13) if record["max_sequence"] else [None]
    model.eval()
    for batch, length in [(1, n) for n in lengths] + [(5, lengths[-1])]:
        inputs = onnx_export.random_inputs(graph, batch, length, seed=7)
        with torch.no_grad(), model.ema_weights():
            expected = graph.module(*inputs).numpy()
        got = session.run(None, {spec.name: t.numpy() for spec, t in zip(graph.inputs, inputs, strict=True)})[0]
        assert np.abs(got - expected).max() <= TOLERANCE, (batch, length)


def test_a_family_without_a_route_is_one_clear_line(tmp_path):
    model = PixelCNN(partial(GatedPixelCNN, channels=8, layers=2, head_channels=8), data_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"PixelCNN has no single forward to export .*ONNX export covers GAN") as info:
        write_onnx(model, tmp_path / "model.onnx")
    assert "\n" not in str(info.value) and not (tmp_path / "model.onnx").exists()


def test_a_graph_that_differs_from_torch_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_difference", lambda *args: 0.5)
    with pytest.raises(ValueError, match=r"model.onnx of this GAN differs from torch by 0.5 \(more than 0.0001\)"):
        write_onnx(conditional_gan(), tmp_path / "model.onnx")


def test_the_error_names_exactly_the_families_with_a_route():
    families = [getattr(importlib.import_module(m), n) for n, m in genlit._EXPORTS.items() if m.startswith(
        "genlit.families.")]  # fmt: skip
    families = [f for f in families if issubclass(f, GenerativeFamily)] + [MaskedLM]
    named = {f.__name__ for f in families if f.__name__ in ONNX_FAMILIES.replace(",", " ").split()}
    routed = {f.__name__ for f in families if issubclass(f, OnnxExportable)} | {"VAE"}  # the VAE: LatentVariable
    assert named == routed
