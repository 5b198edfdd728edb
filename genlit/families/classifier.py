"""Supervised image classifier: not a generative family, but genlit's own evaluation feature extractor.

Trained with ``genlit fit --config experiments/evaluators/mnist_classifier.yaml``; its penultimate
features feed FID, KID and precision/recall and its logits the Inception Score and class statistics
(:mod:`genlit.metrics.features`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from genlit.families.training import NonFinitePolicy, TrainingModule

ClassifierFactory = Callable[[tuple[int, ...], int], nn.Module]
"""A net class taking ``(data_shape, num_classes)``, with ``forward`` -> logits and ``features``."""


class Classifier(TrainingModule):
    """Cross-entropy image classifier with the net passed in.

    Args:
        net: factory called as ``net(data_shape, num_classes)``; ``net(x)`` returns logits (B, K) and
            ``net.features(x)`` the penultimate features (B, D).
        data_shape / num_classes: linked from the DataModule by the CLI.
        label_smoothing: of the cross-entropy loss.
        optimizer / lr_scheduler: factories; the scheduler is stepped every epoch.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    scheduler_interval = "epoch"
    metric_panels = {"loss": ("loss",), "accuracy": ("acc",)}

    def __init__(
        self,
        net: ClassifierFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, on_nonfinite)
        if num_classes < 2:
            raise ValueError(
                f"a classifier needs labelled data with >= 2 classes, got {num_classes}; set --data.label_column"
            )
        self.save_hyperparameters()
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        self.net = net(self.data_shape, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K) of model-space images x (B, C, H, W) in [-1, 1]."""
        return self.net(x)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, D) of model-space images x."""
        return self.net.features(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on labelled images."""
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=self.hparams.label_smoothing)
        if not self.loss_is_finite(loss):
            return None
        self.log_train_step(loss=loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/loss`` and ``val/acc``."""
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/loss`` and ``test/acc``."""
        self._evaluate(batch, "test", self.test_acc)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.net(x)  # (B, K)
        accuracy.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True, batch_size=len(x))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(x))
