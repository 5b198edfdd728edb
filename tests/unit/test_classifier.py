"""genlit's evaluation classifier: shapes, features, learning on a separable toy problem, clear errors."""

from functools import partial

import lightning as L
import pytest
import torch

from genlit.data.tensors import TensorPairs, tensor_loader
from genlit.families.classifier import Classifier
from genlit.nets.classifier import ConvClassifier


def test_logits_and_features_shapes_for_grey_and_colour():
    for shape in [(1, 28, 28), (3, 32, 32)]:
        net = ConvClassifier(shape, 10, width=8, feature_dim=16)
        x = torch.randn(4, *shape)
        assert net(x).shape == (4, 10) and net.features(x).shape == (4, 16)


def test_bad_shapes_and_unlabelled_data_are_clear_errors():
    with pytest.raises(ValueError, match="side divisible by 4"):
        ConvClassifier((1, 30, 30), 10)
    with pytest.raises(ValueError, match="needs labelled data with >= 2 classes"):
        Classifier(partial(ConvClassifier, width=8), (1, 28, 28), num_classes=0)


def test_learns_bright_versus_dark_images():
    torch.manual_seed(0)
    y = torch.randint(2, (256,))
    x = torch.randn(256, 1, 8, 8) * 0.3 + (y.float() * 2 - 1)[:, None, None, None] * 0.5
    model = Classifier(partial(ConvClassifier, width=4, feature_dim=8), (1, 8, 8), num_classes=2)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, tensor_loader(TensorPairs(x, y), 32, train=True), tensor_loader(TensorPairs(x, y), 64, False))
    assert trainer.callback_metrics["val/acc"] > 0.95
