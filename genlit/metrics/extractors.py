"""Building a feature extractor from what a user writes: ``inception``, a classifier checkpoint, or a run root of
``genlit fit`` (its newest ``last.ckpt``). Used by ``genlit evaluate`` and the training-time FID monitor alike."""

from __future__ import annotations

import os
from pathlib import Path

from genlit.checkpoints import load_family
from genlit.files import file_digest
from genlit.metrics.features import ClassifierExtractor, FeatureExtractor, InceptionExtractor


def resolve_extractor(spec: str) -> str:
    """``inception``, a checkpoint path, or a run root of ``genlit fit`` (its newest ``last.ckpt``);
    ``$VARS`` and ``~`` are expanded."""
    if spec == "inception":
        return spec
    path = Path(os.path.expanduser(os.path.expandvars(spec)))
    if path.is_dir():
        runs = sorted(path.glob("*/checkpoints/last.ckpt"))  # run directories are named by start time
        if not runs:
            raise FileNotFoundError(
                f"no evaluator checkpoint under {path}; train it first: "
                "genlit fit --config experiments/evaluators/mnist_classifier.yaml"
            )
        return str(runs[-1])
    return str(path)


def make_extractor(spec: str, inception_weights: str | None = None) -> FeatureExtractor:
    """``inception``, a genlit classifier checkpoint or a run root of one (its newest ``last.ckpt``) -> its
    extractor (clear errors otherwise)."""
    spec = resolve_extractor(spec)
    if spec == "inception":
        return InceptionExtractor(inception_weights)
    if not Path(spec).is_file():
        raise FileNotFoundError(
            f"--extractor {spec}: no such checkpoint; pass 'inception' or a classifier checkpoint trained with "
            "`genlit fit --config experiments/evaluators/mnist_classifier.yaml`"
        )
    return ClassifierExtractor(load_family(spec, needs="features"), f"genlit-classifier:{file_digest(spec)}")
