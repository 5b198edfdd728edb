"""Feature extractors for sample-quality metrics: uint8 images -> (features, logits).

Two are provided, each a feature ``nn.Module`` (building one from a checkpoint or a name is
:func:`genlit.metrics.extractors.make_extractor`'s job):

- :class:`ClassifierExtractor`: a genlit classifier (``evaluator:mnist_classifier``, trained once on first use:
  :mod:`genlit.metrics.evaluators`); features are its penultimate layer, logits its output. Works offline; identity
  ``genlit-classifier:<sha256 prefix>``.
- :class:`InceptionExtractor`: Inception-v3 as torchmetrics provides it (the torch-fidelity port of the
  TF FID network: 2048-d pool features, 1008 logits). Needs ``pip install torch-fidelity`` and its
  weights, downloaded on first use or given as a file.

Every figure is recorded with the extractor's ``identity`` so that only figures measured alike are
compared.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from genlit.files import file_digest

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


class FeatureExtractor(nn.Module):
    """Base: ``forward(images)`` maps uint8 images (B, C, H, W) to ``(features (B, D), logits (B, K))``.

    Attributes: ``identity`` (name and weights hash), ``num_features`` D, ``num_classes`` K.
    """

    identity: str
    num_features: int
    num_classes: int

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class ClassifierExtractor(FeatureExtractor):
    """Features and logits of a genlit classifier (e.g. ``evaluator:mnist_classifier``'s).

    Images must have the classifier's shape (C, H, W); they are mapped to [-1, 1] as in training.

    Args:
        classifier: a module with ``data_shape``, ``num_classes``, ``features(x)`` -> (B, D) and
            ``net.head(features)`` -> logits (as :class:`genlit.families.classifier.Classifier`).
        identity: what the figures are recorded with, e.g. ``genlit-classifier:<weights hash>``.
    """

    def __init__(self, classifier: nn.Module, identity: str) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.identity = identity
        self.data_shape = tuple(classifier.data_shape)
        self.num_classes = classifier.num_classes
        with torch.no_grad():
            self.num_features = classifier.features(torch.zeros(2, *self.data_shape)).shape[1]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(features (B, D), logits (B, K)) of uint8 images (B, C, H, W)."""
        if tuple(images.shape[1:]) != self.data_shape:
            raise ValueError(
                f"the evaluator {self.identity} takes images of shape {self.data_shape}, "
                f"got {tuple(images.shape[1:])}; evaluate with a classifier trained on data of this shape"
            )
        x = images.float() / 127.5 - 1  # (B, C, H, W) in [-1, 1]
        features = self.classifier.features(x)  # (B, D)
        return features, self.classifier.net.head(features)


class InceptionExtractor(FeatureExtractor):
    """Inception-v3 pool features (2048) and logits (1008) through torchmetrics / torch-fidelity.

    Grey images are repeated to 3 channels; the network resizes to 299 px itself.
    """

    def __init__(self, weights_path: str | Path | None = None) -> None:
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048", "logits_unbiased"],
                feature_extractor_weights_path=None if weights_path is None else str(weights_path),
            )
        except (ModuleNotFoundError, ImportError, OSError, RuntimeError) as err:
            raise ValueError(
                "Inception-v3 features are not available on this machine "
                f"({type(err).__name__}: {' '.join(str(err).split())[:160]}). They need `pip install torch-fidelity` "
                f"and its weights ({INCEPTION_WEIGHTS_URL}, downloaded on first use, or passed as "
                "--inception-weights FILE); offline, use genlit's own evaluator instead: "
                "--extractor evaluator:mnist_classifier"
            ) from None
        self.identity = "inception-v3:" + (file_digest(weights_path) if weights_path else "torch-fidelity-default")
        self.num_features, self.num_classes = 2048, 1008

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(pool features (B, 2048), logits (B, 1008)) of uint8 images (B, C, H, W)."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        features, logits = self.net(images)
        return features.reshape(len(images), -1), logits


@torch.no_grad()
def extract(extractor: FeatureExtractor, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Features (N, D) and logits (N, K), float64 on the CPU, of uint8 images (N, C, H, W), in batches on
    the extractor's device."""
    device = next(extractor.parameters()).device
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        f, lg = extractor(images[start : start + batch_size].to(device))
        features.append(f.double().cpu())
        logits.append(lg.double().cpu())
    if not features:
        raise ValueError("no images to extract features from")
    return torch.cat(features), torch.cat(logits)
