"""``genlit export --format onnx``: the network forward a family samples with, as ``model.onnx``, checked against
torch with ONNX Runtime before the export folder is complete.

The graph is the family's :class:`~genlit.families.protocols.OnnxGraph` (:class:`OnnxExportable`): a GAN's
generator (``z`` and ``labels`` if conditional -> ``images``), the diffusion denoiser (``x_t``, ``t``, ``labels`` ->
``prediction``), a language model's net (``tokens`` -> ``logits``, any ``T <= block_size``); and a VAE's decoder
(``z`` -> ``images``), from its :class:`~genlit.families.protocols.LatentVariable` ``decode``. The batch axis (and a
language model's sequence axis) is dynamic. Sampling loops (the diffusion sampler, token sampling, a PixelCNN's
pixel-by-pixel loop) stay outside the graph; a family without such a forward (PixelCNN, Flow, VQ-VAE, CycleGAN) is one
clear error naming the families that have one.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` then onnxscript's translation; the TorchScript
exporter is deprecated), in eval mode with the weights sampling uses (the EMA's where the family keeps one), as one
file (no external data: models under 2 GB). Check: the graph and torch run on the same random inputs (batch 2, and
batch 3 at the longest sequence) and may differ by at most :data:`TOLERANCE`; otherwise one clear error, and the
export folder is not written.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from genlit.families.protocols import LatentVariable, OnnxExportable, OnnxGraph, OnnxInput

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4  # the largest absolute difference allowed between ONNX Runtime and torch
ONNX_FAMILIES = ("GAN, ACGAN and InfoGAN (the generator), VAE (the decoder), Diffusion and EDM (the denoiser), "
                 "AutoregressiveLM and MaskedLM (the token logits)")  # fmt: skip
_EXAMPLE_SEQUENCE = 8  # the sequence length traced (any length up to block_size runs)


def onnx_graph_of(model) -> OnnxGraph:
    """The graph ``model`` samples with, or one clear error naming the families that have one."""
    if isinstance(model, OnnxExportable):
        return model.onnx_graph()
    if isinstance(model, LatentVariable):
        return decoder_graph(model)
    raise ValueError(f"--format onnx: {type(model).__name__} has no single forward to export (its samples come from "
                     f"a loop or a model not written as one network); ONNX export covers {ONNX_FAMILIES}")  # fmt: skip


class _Decode(nn.Module):
    """``model.decode(z, labels)`` as a module (its decoder and the mapping to data space)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (B, *data_shape) of latents ``z`` (B, latent_dim)."""
        return self.model.decode(z, labels)


def decoder_graph(model) -> OnnxGraph:
    """A latent-variable model's decoder: ``z`` (B, latent_dim) and, when conditional, ``labels`` -> ``images``."""
    inputs = [OnnxInput("z", ("batch", model.latent_dim))]
    if model.conditional:
        inputs.append(OnnxInput("labels", ("batch",), torch.long, model.num_classes))
    names = ", ".join(i.name for i in inputs)
    return OnnxGraph(_Decode(model), tuple(inputs), "images", f"the decoder: ({names}) -> images")


def write_onnx(model, path: Path) -> dict:
    """Write ``model``'s graph to ``path``, check it with ONNX Runtime, and return what ``config.json`` records of
    it: the forward, the inputs and outputs (names, shapes with their dynamic axes, dtypes), the opset, the check."""
    graph = onnx_graph_of(model)
    _need_onnx()
    with model.eval_mode(), model.ema_weights(), torch.no_grad():
        program = _export(graph, path, type(model).__name__)
        session = inference_session(path)
        worst = max(_difference(graph, session, batch, length) for batch, length in check_sizes(graph))
    if not worst <= TOLERANCE:
        raise ValueError(f"--format onnx: {ONNX_FILE} of this {type(model).__name__} differs from torch by {worst:.3g} "
                         f"(more than {TOLERANCE:g}) on random inputs; the export is not written")  # fmt: skip
    output = session.get_outputs()[0]
    import onnxruntime

    return {
        "file": ONNX_FILE,
        "forward": graph.description,
        "inputs": [_input_record(i) for i in graph.inputs],
        "outputs": [{"name": output.name, "shape": list(output.shape), "dtype": "float32"}],
        "max_sequence": graph.max_sequence,
        "opset": program.model.opset_imports.get(""),
        "check": {
            "runtime": f"onnxruntime {onnxruntime.__version__}",
            "max_abs_diff": float(worst),
            "tolerance": TOLERANCE,
            "inputs": [{"batch": b} | ({"sequence": n} if n else {}) for b, n in check_sizes(graph)],
        },
    }


def _input_record(spec: OnnxInput) -> dict:
    """What ``config.json`` says of one input: name, shape (dynamic axes by name), dtype, the range of integers."""
    record = {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype).removeprefix("torch.")}
    return record | ({"values": f"0..{spec.high - 1}"} if spec.high else {})


def _need_onnx() -> None:
    """One clear error when the ONNX packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--format onnx needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
                         "pip install 'genlit[onnx]'") from None  # fmt: skip


def check_sizes(graph: OnnxGraph) -> list[tuple[int, int | None]]:
    """(batch, sequence length) of the inputs the export is checked on: batch 2 at the traced length, and batch 3
    at the longest one (None: no sequence axis)."""
    if graph.max_sequence is None:
        return [(2, None), (3, None)]
    return [(2, min(_EXAMPLE_SEQUENCE, graph.max_sequence)), (3, graph.max_sequence)]


def random_inputs(graph: OnnxGraph, batch: int, length: int | None, seed: int = 0) -> list[Tensor]:
    """Inputs of ``graph`` for ``batch`` items (and sequences of ``length``): normal noise, integers in range."""
    rng = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in graph.inputs:
        shape = [batch if a == "batch" else length if a == "sequence" else a for a in spec.shape]
        if spec.dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=rng, dtype=spec.dtype))
        else:
            tensors.append(torch.randint(spec.high, shape, generator=rng, dtype=spec.dtype))
    return tensors


def _export(graph: OnnxGraph, path: Path, family: str):
    """``torch.onnx.export`` of ``graph`` (dynamic batch and sequence axes) to ``path``; one clear error if it fails."""
    dims = {"batch": torch.export.Dim("batch", min=1)}
    if graph.max_sequence is not None:
        dims["sequence"] = torch.export.Dim("sequence", min=1, max=graph.max_sequence)
    dynamic = tuple({axis: dims[a] for axis, a in enumerate(spec.shape) if isinstance(a, str)} for spec in graph.inputs)
    example = random_inputs(graph, *check_sizes(graph)[0])
    device = next(graph.module.parameters()).device
    try:
        with _quiet():
            return torch.onnx.export(graph.module, tuple(t.to(device) for t in example), str(path), dynamo=True,
                                     input_names=[i.name for i in graph.inputs], output_names=[graph.output],
                                     dynamic_shapes=dynamic, external_data=False, verbose=False)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - any exporter failure means the same thing to the user
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"--format onnx: torch.onnx.export could not export {graph.description} of this {family}: "
                         f"{type(err).__name__}: {detail}") from None  # fmt: skip


@contextmanager
def _quiet():
    """Silence the exporter's notes (missing torchvision operators, its progress lines)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def inference_session(path: str | Path):
    """An ONNX Runtime CPU session on ``path`` with torch's thread count (``OMP_NUM_THREADS`` holds for both)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _difference(graph: OnnxGraph, session, batch: int, length: int | None) -> float:
    """The largest absolute difference between ONNX Runtime and torch on one set of random inputs."""
    inputs = random_inputs(graph, batch, length, seed=batch)
    device = next(graph.module.parameters()).device
    expected = graph.module(*(t.to(device) for t in inputs)).float().cpu()
    got = session.run(None, {spec.name: t.numpy() for spec, t in zip(graph.inputs, inputs, strict=True)})[0]
    if tuple(got.shape) != tuple(expected.shape):
        raise ValueError(f"--format onnx: {ONNX_FILE} gives shape {tuple(got.shape)} where torch gives "
                         f"{tuple(expected.shape)}; the export is not written")  # fmt: skip
    return float((torch.from_numpy(got) - expected).abs().max())
