"""Building a feature extractor from what a user writes: ``inception``, an evaluator config with the dataset it is
trained on (``evaluator:mnist_classifier``, or the path of an evaluator YAML: found in the cache or trained once,
:mod:`genlit.metrics.evaluators`), a classifier checkpoint, or a run root of ``genlit fit`` (its newest
``last.ckpt``). Used by ``genlit evaluate`` and the training-time FID monitor alike."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from genlit.checkpoints import load_family
from genlit.files import file_digest
from genlit.metrics.evaluators import evaluator, find_or_train, is_evaluator_spec
from genlit.metrics.features import ClassifierExtractor, FeatureExtractor, InceptionExtractor


def resolve_extractor(spec: str, dataset: str | None = None) -> str:
    """``inception``, or the checkpoint a spec names: an evaluator config's (trained on ``dataset`` on first use),
    a checkpoint path, or a run root's newest ``last.ckpt``; ``$VARS`` and ``~`` are expanded."""
    if spec == "inception":
        return spec
    if is_evaluator_spec(spec):
        if dataset is None:
            raise ValueError(
                f"the evaluator {spec} is trained on the dataset it measures; give it (genlit evaluate: --data or "
                "--extractor-data; SampleQualityMonitor: the run's DataModule)"
            )
        return str(find_or_train(evaluator(spec, dataset)))
    path = Path(os.path.expanduser(os.path.expandvars(spec)))
    if path.is_dir():
        runs = sorted(path.glob("*/checkpoints/last.ckpt"))  # run directories are named by start time
        if not runs:
            raise FileNotFoundError(
                f"no evaluator checkpoint under {path}; pass evaluator:mnist_classifier instead (trained once, "
                "on first use) or a classifier checkpoint"
            )
        return str(runs[-1])
    return str(path)


def make_extractor(spec: str, inception_weights: str | None = None, dataset: str | None = None) -> FeatureExtractor:
    """The extractor a spec names (:func:`resolve_extractor`; ``dataset``: what an evaluator config is trained on),
    with clear errors otherwise."""
    spec = resolve_extractor(spec, dataset)
    if spec == "inception":
        return InceptionExtractor(inception_weights)
    if not Path(spec).is_file():
        raise FileNotFoundError(
            f"--extractor {spec}: no such checkpoint; pass 'inception', evaluator:mnist_classifier (trained once, on "
            "first use) or a genlit classifier checkpoint"
        )
    return ClassifierExtractor(load_family(spec, needs="features"), f"genlit-classifier:{file_digest(spec)}")


def extractor_from_bytes(checkpoint: bytes) -> ClassifierExtractor:
    """The extractor of a classifier checkpoint's bytes (another rank's), with the identity the file would give."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "evaluator.ckpt"
        path.write_bytes(checkpoint)
        classifier = load_family(path, needs="features")
    return ClassifierExtractor(classifier, f"genlit-classifier:{hashlib.sha256(checkpoint).hexdigest()[:12]}")
