"""A small convolutional image classifier: genlit's own feature extractor for evaluating MNIST-like data.

Two conv stages (conv-BN-ReLU x2, max-pool) at full and half resolution, global information through a
fully connected ``feature_dim`` layer (the penultimate features used by FID, KID and precision/recall),
dropout, and a linear layer to the class logits (used by the Inception Score and class statistics).
Any square side divisible by 4 works (28 -> 14 -> 7; 32 -> 16 -> 8), grey or colour.
"""

from __future__ import annotations

from torch import Tensor, nn


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )  # fmt: skip


class ConvClassifier(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> class logits (B, num_classes); :meth:`features` gives the
    penultimate activations (B, feature_dim).

    Args:
        data_shape: (C, H, W), square, side divisible by 4.
        num_classes: number of classes (>= 2).
        width: channels of the first stage (the second has 2 * width).
        feature_dim: size of the penultimate (feature) layer.
        dropout: dropout before the last layer.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        shape = tuple(data_shape)
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 4:
            raise ValueError(f"ConvClassifier needs square images (C, H, W) with a side divisible by 4, got {shape}")
        if num_classes < 2:
            raise ValueError(
                f"ConvClassifier needs labelled data with >= 2 classes, got num_classes={num_classes}; "
                "set --data.label_column"
            )
        self.data_shape, self.num_classes, self.feature_dim = shape, num_classes, feature_dim
        side = shape[1] // 4
        self.body = nn.Sequential(
            _stage(shape[0], width), _stage(width, 2 * width), nn.Flatten(),
            nn.Linear(2 * width * side * side, feature_dim), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, feature_dim) of images x (B, C, H, W) in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.body(x))
