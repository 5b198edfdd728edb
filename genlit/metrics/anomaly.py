"""Anomaly scores of likelihood models and their AUROC: per-example scores beside the raw likelihood.

A likelihood model trained on "normal" data should give anomalies a low likelihood, but deep generative models
famously give *simpler* inputs a higher likelihood whatever they were trained on (Nalisnick et al. 2019,
https://arxiv.org/abs/1810.09136). Two corrections remove what the likelihood owes to low-level statistics:

- **likelihood ratio** (Ren et al. 2019, https://arxiv.org/abs/1906.02845): the model's NLL minus the NLL of a
  *background* model trained on perturbed inputs (``ImageDataModule(mutation_rate=...)``), which captures the
  population-level statistics and little of the semantics;
- **input complexity** (Serra et al. 2020, https://arxiv.org/abs/1909.11480): the NLL in bits minus the length in
  bits of the image under a generic lossless compressor (PNG here, the paper's first choice), a universal
  model's code length standing in for the background.

And **reconstruction error** for models with a bottleneck (VAE): the mean squared error of the reconstruction. A
class-conditional model trained on the normal classes is also a generative classifier (Bayes' rule over its class
likelihoods, uniform prior): **class ambiguity**, the log-odds that an image belongs to none of its best class,
log(1 - p(y*|x)) - log p(y*|x), is high for an image no normal class explains better than the others (the
maximum-softmax baseline of Hendrycks & Gimpel 2017, https://arxiv.org/abs/1610.02136, from a generative model).
Every score is "higher = more anomalous" and per dimension (bits or squared error per pixel value), so scores of
images of one size compare across models.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchmetrics.classification import BinaryAUROC

SCORES = ("nll", "likelihood_ratio", "complexity", "reconstruction", "class_ambiguity")
"""The scores genlit reports, in the order of its tables (``test/anomaly_auroc_<score>``)."""


def png_bits(images: Tensor, bilevel: bool = False) -> Tensor:
    """The PNG code length in bits (N,) float64 of each uint8 image (N, C, H, W), C 1 or 3, at compression
    level 9: the lossless compressor of Serra et al.'s input-complexity estimate (Pillow's PNG writer; a
    hand-written compressor would only be a worse one). ``bilevel``: the images hold 0/1 pixels (C = 1) and are
    written as 1-bit PNGs, the code length of the binarized image a Bernoulli model scores."""
    channels = (1,) if bilevel else (1, 3)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in channels:
        raise ValueError(f"png_bits expects uint8 images (N, C, H, W) with C in {channels} (1 if bilevel), got "
                         f"{images.dtype} {tuple(images.shape)}")  # fmt: skip
    arrays = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    if bilevel:
        arrays = arrays > 0  # (N, H, W, 1) bool: Pillow writes mode "1"
    lengths = [_png_length(np.ascontiguousarray(a[..., 0] if a.shape[-1] == 1 else a)) for a in arrays]
    return 8.0 * torch.tensor(lengths, dtype=torch.float64)  # (N,)


def _png_length(array: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=9)
    return buffer.getbuffer().nbytes


def class_marginal(class_nll: Tensor) -> tuple[Tensor, Tensor]:
    """(the marginal NLL (B,), the class ambiguity (B,)) of per-class NLLs (K, B) in nats, K >= 2 classes with a
    uniform prior: ``-log(sum_y p(x|y) / K)`` and ``log(1 - p(y*|x)) - log p(y*|x)``, computed in log space."""
    if class_nll.ndim != 2 or class_nll.shape[0] < 2:
        raise ValueError(f"class_marginal needs NLLs of K >= 2 classes, (K, B); got {tuple(class_nll.shape)}")
    log_px_y = -class_nll.double()  # (K, B)
    nll = -(torch.logsumexp(log_px_y, 0) - math.log(class_nll.shape[0]))  # (B,)
    best = log_px_y.max(0)  # (B,) values and indices
    others = log_px_y.scatter(0, best.indices[None], float("-inf"))  # (K, B) the best class left out
    ambiguity = torch.logsumexp(others, 0) - best.values  # (B,)
    return nll.to(class_nll.dtype), ambiguity.to(class_nll.dtype)


def anomaly_scores(
    nll: Tensor,
    num_dims: int,
    *,
    background_nll: Tensor | None = None,
    compressed_bits: Tensor | None = None,
    reconstruction_error: Tensor | None = None,
    class_ambiguity: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-example scores (B,) each, higher = more anomalous, per dimension: ``nll`` (bits/dim of the model's NLL
    in nats), ``likelihood_ratio`` (the model's minus the background's, bits/dim), ``complexity`` (NLL bits minus
    the compressed length, per dim), ``reconstruction`` (as given: mean squared error per value) and
    ``class_ambiguity`` (as given: log-odds, :func:`class_marginal`). A score whose input is None is left out."""
    to_bits = 1.0 / (num_dims * math.log(2))
    scores = {"nll": nll * to_bits}
    if background_nll is not None:
        scores["likelihood_ratio"] = (nll - background_nll) * to_bits
    if compressed_bits is not None:
        scores["complexity"] = nll * to_bits - compressed_bits.to(nll) / num_dims
    if reconstruction_error is not None:
        scores["reconstruction"] = reconstruction_error
    if class_ambiguity is not None:
        scores["class_ambiguity"] = class_ambiguity
    return scores


class AnomalyAUROC(torch.nn.ModuleDict):
    """One torchmetrics ``BinaryAUROC`` per score (keys of :data:`SCORES`): held-out classes are the positives.

    Scores are squashed into (0, 1) by ``1/2 + atan(s)/pi`` before they reach torchmetrics, which reads values
    outside [0, 1] as logits batch by batch (a batch that happened to lie in [0, 1] would be read differently). The
    map is strictly increasing, so the AUROC is the scores' own, and its tails fall as 1/s rather than a sigmoid's
    exp(-s), so log-odds of -100 stay distinct from -200 in float32.
    """

    def __init__(self) -> None:
        super().__init__({name: BinaryAUROC() for name in SCORES})

    def add_scores(self, scores: dict[str, Tensor], is_anomaly: Tensor) -> None:
        """Add per-example scores (B,) for each name and the 0/1 targets (B,)."""
        for name, score in scores.items():
            self[name].update((0.5 + torch.atan(score.double()) / math.pi).float(), is_anomaly.long())
