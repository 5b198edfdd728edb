"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders",
https://arxiv.org/abs/1606.05328): masked convolutions in a vertical and a horizontal stack, gated activations
``tanh(a) * sigmoid(b)`` and an optional class embedding added inside every gate.

The output at pixel (i, j) sees only pixels before it in raster order, with no blind spot:

- The **vertical stack** at row i sees rows strictly above i: its first layer's (r+1) x k kernel has its last row
  (the current one) masked, and every later layer's (r+1) x k kernel reads rows i-r..i of features that already see
  only rows above. So its features at row i need nothing of row i, and the stack adds them to the horizontal stack
  of the same row without the shift of the paper (the formulation of van den Oord et al.'s later VQ-VAE prior).
- The **horizontal stack** at (i, j) reads columns j-r..j of row i through a 1 x (r+1) kernel; the first layer
  masks the current pixel (mask A), later layers read their own features at (i, j) (mask B).
- **Colour** (C > 1 channels): the channels of a pixel are modelled in order (R, then G given R, then B given R
  and G; PixelRNN's masks, van den Oord et al. 2016a, https://arxiv.org/abs/1601.06759, section 3.4). Every
  feature map is split into C groups and, at the current pixel only, group g reads input groups < g (mask A) or
  <= g (mask B): in the horizontal kernel's centre tap, its 1 x 1 output convolution and the output head. The
  vertical stack never sees the current row, so it needs no colour mask.

Receptive field (:meth:`GatedPixelCNN.receptive_field` gives R): with a first kernel of reach r1 = k1 // 2 and L
layers of reach r = k // 2 after it, R = r1 + (L - 1) r, and the output at (i, j) depends on exactly the pixels
(i', j') with i - R <= i' < i and |j' - j| <= R, and (i, j') with j - R <= j' < j (and the current pixel's earlier
colours). A net with R >= max(H - 1, W - 1) sees every earlier pixel of an H x W image.

Exact shortcuts for sampling: both stacks pad only above, left and right, so the output at row i depends on rows
<= i (run the net on the top i + 1 rows), and at (i, j) the horizontal stack depends on columns <= j of row i given
the vertical stack's row-i features (:meth:`GatedPixelCNN.vertical_stack` once per row, then
:meth:`GatedPixelCNN.horizontal_stack` on one row cropped to j + 1 columns per pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def colour_groups(num_channels: int, colours: int, blocks: int = 1) -> Tensor:
    """The colour (0..colours-1) each of ``num_channels`` feature channels belongs to, (num_channels,): the channels
    are ``blocks`` equal blocks (e.g. the tanh and sigmoid halves of a gate's input), each split into ``colours``
    equal consecutive groups."""
    block = num_channels // blocks
    return (torch.arange(num_channels) % block) // (block // colours)


def colour_mask(out_groups: Tensor, in_groups: Tensor, include_own: bool) -> Tensor:
    """(out, in) 0/1 float mask at the current pixel: output colour g reads input colours < g, and g itself when
    ``include_own`` (mask B; mask A without it)."""
    later = out_groups[:, None] > in_groups[None, :]  # (out, in)
    own = out_groups[:, None] == in_groups[None, :]  # (out, in)
    return (later | (own & include_own)).float()


class MaskedConv2d(nn.Conv2d):
    """A convolution without padding whose weight is multiplied by a fixed 0/1 ``mask`` (out, in, kh, kw) at every
    call (a non-persistent buffer: it is rebuilt by ``__init__``, not stored in checkpoints); None: no mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask: Tensor | None) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``conv2d(x, weight * mask)``: (B, in, H, W) -> (B, out, H - kh + 1, W - kw + 1)."""
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.conv2d(x, weight, self.bias)


def gate(pre: Tensor) -> Tensor:
    """The gated activation ``tanh(a) * sigmoid(b)`` of pre-activations (B, 2C, H, W) in halves a, b: (B, C, H, W)."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks (figure 2 of the paper). ``first``: the input layer (masks A, no residual).

    Args:
        in_channels: channels of the inputs of both stacks (the image's C for the first layer).
        channels: feature channels of both stacks' outputs.
        kernel_size: k (odd): the vertical kernel is (k // 2 + 1) x k, the horizontal one 1 x (k // 2 + 1).
        num_classes: classes of the label embedding added inside the gates (0: unconditional).
        colours: channels of the image, modelled in order within a pixel.
        first: the layer that reads the image.
    """

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int, num_classes: int, colours: int, first: bool
    ) -> None:
        super().__init__()
        self.reach, self.first = kernel_size // 2, first
        r, two = self.reach, 2 * channels
        vertical_mask = None
        if first:  # the current row masked: the stack sees rows strictly above
            vertical_mask = torch.ones(two, in_channels, r + 1, kernel_size)
            vertical_mask[:, :, r] = 0
        self.vertical = MaskedConv2d(in_channels, two, (r + 1, kernel_size), vertical_mask)
        centre = colour_mask(colour_groups(two, colours, 2), colour_groups(in_channels, colours), not first)
        horizontal_mask = None
        if not bool(centre.all()):  # the current pixel's tap: mask A (first layer), or B across colours
            horizontal_mask = torch.ones(two, in_channels, 1, r + 1)
            horizontal_mask[:, :, 0, r] = centre
        self.horizontal = MaskedConv2d(in_channels, two, (1, r + 1), horizontal_mask)
        self.vertical_to_horizontal = nn.Conv2d(two, two, 1)
        self.out = _pointwise(channels, channels, colours)
        self.label = nn.Embedding(num_classes, two) if num_classes else None

    def vertical_step(self, v: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """The vertical stack's next features (B, channels, H, W) from ``v`` (B, in, H, W), and what it adds to the
        horizontal stack's pre-activations at the same rows (B, 2 channels, H, W), the label's embedding included."""
        r = self.reach
        pre = self.vertical(F.pad(v, (r, r, r, 0)))  # (B, 2ch, H, W): rows i-r..i, columns j-r..j+r
        bias = 0.0 if self.label is None else self.label(labels)[:, :, None, None]  # (B, 2ch, 1, 1)
        return gate(pre + bias), self.vertical_to_horizontal(pre) + bias

    def horizontal_step(self, h: Tensor, from_vertical: Tensor) -> Tensor:
        """The horizontal stack's next features (B, channels, H, W) from ``h`` (B, in, H, W) and the vertical
        stack's contribution (B, 2 channels, H, W); a residual connection after the first layer."""
        pre = self.horizontal(F.pad(h, (self.reach, 0, 0, 0))) + from_vertical  # (B, 2ch, H, W)
        out = self.out(gate(pre))  # (B, ch, H, W)
        return out if self.first else out + h


def _pointwise(in_channels: int, out_channels: int, colours: int) -> nn.Conv2d:
    """A 1 x 1 convolution that keeps the colour order (mask B); a plain one for grey images."""
    if colours == 1:
        return nn.Conv2d(in_channels, out_channels, 1)
    mask = colour_mask(colour_groups(out_channels, colours), colour_groups(in_channels, colours), True)
    return MaskedConv2d(in_channels, out_channels, (1, 1), mask[:, :, None, None])


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN over images (B, C, H, W) in [-1, 1]: logits (B, C * logits_per_channel, H, W) of every
    sub-pixel given the pixels before it (colour-major: channel c's logits are ``[c * K, (c + 1) * K)``).

    Args:
        data_shape: (C, H, W) of the images (linked from the DataModule).
        num_classes: classes of the label embedding in every gate (0: unconditional; given by the family).
        logits_per_channel: K, logits per sub-pixel (given by the family: 1 for a Bernoulli, 256 for 8-bit levels).
        channels: feature channels of both stacks (a multiple of C).
        layers: gated layers, the first (mask A) included.
        kernel_size: k of the layers after the first (odd, >= 3).
        first_kernel_size: k of the first layer (odd, >= 3; 7 in the paper).
        head_channels: hidden channels of the output head (ReLU, 1 x 1, ReLU, 1 x 1; a multiple of C).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        logits_per_channel: int = 1,
        channels: int = 64,
        layers: int = 12,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        _check_options(data_shape, logits_per_channel, channels, layers, kernel_size, first_kernel_size, head_channels)
        colours = data_shape[0]
        self.data_shape, self.logits_per_channel = tuple(data_shape), logits_per_channel
        self.layers = nn.ModuleList(
            GatedLayer(colours if i == 0 else channels, channels, first_kernel_size if i == 0 else kernel_size,
                       num_classes, colours, first=i == 0)
            for i in range(layers)
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.ReLU(),
            _pointwise(channels, head_channels, colours),
            nn.ReLU(),
            _pointwise(head_channels, colours * logits_per_channel, colours),
        )

    @property
    def receptive_field(self) -> int:
        """R: the output at (i, j) sees rows i-R..i-1 at columns j-R..j+R and row i at columns j-R..j-1."""
        return sum(layer.reach for layer in self.layers)

    def vertical_stack(self, x: Tensor, labels: Tensor | None = None) -> list[Tensor]:
        """What the vertical stack adds to each horizontal layer, one (B, 2 channels, H', W) per layer, for images
        x (B, C, H', W) (any number of top rows H'); row i depends only on the rows of x above it."""
        contributions, v = [], x
        for layer in self.layers:
            v, from_vertical = layer.vertical_step(v, labels)  # (B, ch, H', W), (B, 2ch, H', W)
            contributions.append(from_vertical)
        return contributions

    def horizontal_stack(self, x: Tensor, contributions: list[Tensor]) -> Tensor:
        """Logits (B, C * K, H', W') from images x (B, C, H', W') and the vertical stack's contributions at the same
        rows and columns (one (B, 2 channels, H', W') per layer). Column j depends on columns <= j only."""
        h = x
        for layer, from_vertical in zip(self.layers, contributions, strict=True):
            h = layer.horizontal_step(h, from_vertical)  # (B, ch, H', W')
        return self.head(h)  # (B, C * K, H', W')

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, C * K, H, W) of images x (B, C, H, W) in [-1, 1] with labels (B,) of a conditional net."""
        return self.horizontal_stack(x, self.vertical_stack(x, labels))


def _check_options(data_shape, logits_per_channel, channels, layers, kernel_size, first_kernel_size, head) -> None:
    if len(data_shape) != 3:
        raise ValueError(f"GatedPixelCNN models images (C, H, W), got data_shape {tuple(data_shape)}")
    colours = data_shape[0]
    if channels < 1 or head < 1 or channels % colours or head % colours:
        raise ValueError(f"channels ({channels}) and head_channels ({head}) must be positive multiples of C={colours}")
    if layers < 1 or logits_per_channel < 1:
        raise ValueError(f"layers ({layers}) and logits_per_channel ({logits_per_channel}) must be >= 1")
    for name, k in (("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)):
        if k < 3 or k % 2 == 0:
            raise ValueError(f"{name} must be odd and >= 3, got {k}")
