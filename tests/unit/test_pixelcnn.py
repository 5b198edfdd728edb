"""The gated PixelCNN and its family: no pixel sees itself or a later one (colours in order within a pixel), the
receptive field is exactly the documented one, the exact NLL against a hand computation, bits/dim, every sampling
cache gives the same logits and samples, per-sample seeding, and one-line errors for bad options."""

import math
from functools import partial

import pytest
import torch

from genlit.families.pixelcnn import PixelCNN
from genlit.nets.pixelcnn import GatedPixelCNN
from genlit.seeding import SampleRNG


def tiny_net(**overrides):
    return partial(GatedPixelCNN, **({"channels": 12, "layers": 3, "kernel_size": 3, "first_kernel_size": 3,
                                       "head_channels": 12} | overrides))  # fmt: skip


def make_model(shape=(1, 6, 6), likelihood="bernoulli", net=None, **kwargs) -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN(net or tiny_net(), shape, likelihood=likelihood, **kwargs).eval()


def images(n: int, shape, seed: int = 0) -> torch.Tensor:
    levels = torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed))
    return levels.float() / 127.5 - 1  # (n, C, H, W) on the 8-bit levels of model space


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------ causality
@pytest.mark.parametrize(("shape", "likelihood"), [((1, 6, 6), "bernoulli"), ((1, 5, 5), "categorical"),
                                                   ((3, 5, 5), "categorical")])  # fmt: skip
def test_no_sub_pixel_sees_itself_or_a_later_one(shape, likelihood):
    """Perturb sub-pixel t (pixel p, colour c): the logits of every sub-pixel up to t in raster order (earlier
    pixels, and colours <= c of pixel p) stay the same; the next colours of p and the next pixel see it."""
    model = make_model(shape, likelihood, tiny_net(layers=4, channels=24, head_channels=48))
    c, h, w = shape
    x = images(4, shape)
    with torch.no_grad():
        base = model.logits(x)  # (4, C, H, W) or (4, C, K, H, W)
        for p in range(h * w):
            i, j = divmod(p, w)
            for colour in range(c):
                changed = x.clone()
                changed[:, colour, i, j] = -changed[:, colour, i, j] - 0.5  # another value, whatever it was
                diff = (model.logits(changed) - base).abs()
                diff = diff.amax(2) if diff.dim() == 5 else diff  # (4, C, H, W): largest change per sub-pixel
                diff = diff.amax(0)  # (C, H, W): over the images (a dead ReLU may hide a change in one)
                assert p == 0 or diff.flatten(1)[:, :p].max() < 1e-6, (p, colour)  # earlier pixels
                assert diff[: colour + 1, i, j].max() < 1e-6, (p, colour)  # this pixel, colours <= c
                if colour + 1 < c:
                    assert diff[colour + 1 :, i, j].min() > 1e-6, (p, colour)  # later colours see it
                elif j + 1 < w:
                    assert diff[:, i, j + 1].min() > 1e-6, (p, colour)  # the next pixel sees it


def _sensitivity(net: GatedPixelCNN, shape, i: int, j: int) -> torch.Tensor:
    """|d logits(i, j) / d x| summed over the logits, channels and 4 images: (H, W), in float64 (exact zeros stay
    zero; several images, as a dead ReLU may hide a path in one)."""
    net = net.double()
    x = images(4, shape).double().requires_grad_(True)
    net(x)[:, :, i, j].sum().backward()
    return x.grad.abs().sum((0, 1))  # (H, W)


def _documented_field(h: int, w: int, i: int, j: int, reach: int) -> torch.Tensor:
    """The pixels the output at (i, j) sees by the net's docstring: rows i-R..i-1 at columns j-R..j+R, and row i at
    columns j-R..j-1, within the image. (H, W) bool."""
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    above = (rows < i) & (rows >= i - reach) & ((cols - j).abs() <= reach)
    left = (rows == i) & (cols < j) & (cols >= j - reach)
    return above | left


@pytest.mark.parametrize(("layers", "first", "kernel", "reach"), [(2, 3, 3, 2), (3, 5, 3, 4), (4, 7, 5, 9)])
def test_receptive_field_is_exactly_the_documented_one(layers, first, kernel, reach):
    """Non-zero gradients exactly on the documented field (everything inside it, nothing outside) for nets of reach
    2, 4 and 9 on a 12 x 12 image, at the centre, a corner and two edges; and a net of reach 7 on an 8 x 8 image, deep
    enough to cover it, sees every earlier pixel."""
    torch.manual_seed(0)
    net = GatedPixelCNN((1, 12, 12), 0, 1, channels=8, layers=layers, kernel_size=kernel, first_kernel_size=first,
                        head_channels=8)  # fmt: skip
    assert net.receptive_field == reach
    for i, j in [(6, 5), (11, 11), (0, 3), (4, 0)]:
        seen = _sensitivity(net, (1, 12, 12), i, j) > 0  # (12, 12)
        assert torch.equal(seen, _documented_field(12, 12, i, j, reach)), (i, j)
    covering = GatedPixelCNN((1, 8, 8), 0, 1, channels=8, layers=4, kernel_size=5, first_kernel_size=3, head_channels=8)
    assert covering.receptive_field >= 7
    for i, j in [(7, 7), (4, 3), (7, 0)]:
        earlier = (torch.arange(64) < i * 8 + j).reshape(8, 8)  # every pixel before (i, j) in raster order
        assert torch.equal(_sensitivity(covering, (1, 8, 8), i, j) > 0, earlier), (i, j)


def test_colour_channels_see_the_earlier_colours_of_their_pixel():
    """In a colour net, R of pixel t sees no colour of t, G sees R, B sees R and G (and all see earlier pixels)."""
    torch.manual_seed(0)
    net = GatedPixelCNN((3, 5, 5), 0, 4, channels=12, layers=3, head_channels=12).double()
    x = images(4, (3, 5, 5)).double().requires_grad_(True)
    out = net(x)  # (4, 3 * 4, 5, 5), colour-major
    for colour in range(3):
        (grad,) = torch.autograd.grad(out[:, 4 * colour : 4 * colour + 4, 2, 3].sum(), x, retain_graph=True)
        seen = grad.abs().sum(0) > 0  # (3, 5, 5): over 4 images (a dead ReLU may hide a path in one)
        assert seen[:, 2, 3].tolist() == [c < colour for c in range(3)], colour
        assert seen[:, 2, 2].all() and seen[:, 1, 3].all()  # the pixels left of and above it


# ------------------------------------------------------------------------------------------------ likelihood
def test_bernoulli_nll_is_the_hand_computed_sum_and_bits_per_dim_divide_by_d_ln2():
    model = make_model((1, 6, 6), "bernoulli")
    x = images(4, (1, 6, 6))
    x_in, target = model.prepare(x, "test")
    assert set(target.unique().tolist()) <= {0.0, 1.0} and torch.equal(x_in, target * 2 - 1)
    with torch.no_grad():
        logits = model.logits(x_in).double()  # (4, 1, 6, 6)
        nll = model.nll(x)  # (4,)
    p = torch.sigmoid(logits)
    hand = -(target * p.log() + (1 - target) * (1 - p).log()).sum((1, 2, 3))  # (4,)
    assert nll.shape == (4,) and torch.allclose(nll.double(), hand, rtol=1e-5)
    assert torch.allclose(model.bits_per_dim(nll), nll / (36 * math.log(2)))


def test_categorical_nll_is_the_hand_computed_sum_over_colours_and_levels():
    model = make_model((3, 4, 4), "categorical")
    x = images(2, (3, 4, 4))
    x_in, levels = model.prepare(x, "test")
    assert torch.equal(x_in, x) and torch.equal(levels, ((x + 1) * 127.5).round().long())
    with torch.no_grad():
        logits = model.logits(x_in)  # (2, 3, 256, 4, 4)
        nll = model.nll(x)  # (2,)
    assert logits.shape == (2, 3, 256, 4, 4)
    log_p = torch.log_softmax(logits.double(), dim=2)  # (2, 3, 256, 4, 4)
    hand = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(4):
                    hand[b] -= log_p[b, c, levels[b, c, i, j], i, j]
    assert torch.allclose(nll.double(), hand, rtol=1e-5)
    assert torch.allclose(model.bits_per_dim(nll), nll / (48 * math.log(2)))


def test_evaluation_binarization_is_fixed_and_training_binarization_fresh():
    model = make_model()
    x = images(8, (1, 6, 6))
    assert torch.equal(model.prepare(x, "val", 3)[1], model.prepare(x, "val", 3)[1])
    assert not torch.equal(model.prepare(x, "train")[1], model.prepare(x, "train")[1])
    assert torch.equal(model.nll(x), model.nll(x))


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize(("shape", "likelihood", "conditional"), [((1, 6, 6), "bernoulli", False),
                                                                  ((3, 4, 4), "categorical", True)])  # fmt: skip
def test_every_cache_gives_the_full_pass_logits_and_the_same_samples(shape, likelihood, conditional):
    model = make_model(shape, likelihood, tiny_net(layers=4), num_classes=3 if conditional else 0,
                       conditional=conditional)  # fmt: skip
    labels = torch.tensor([2, 0]) if conditional else None
    x = images(2, shape)
    c, h, w = shape
    with torch.no_grad():
        full = model.logits(x, labels)
        for i in range(h):
            vertical = model.net.vertical_stack(x[:, :, : i + 1], labels)
            for j in range(w):
                for cache in ("none", "rows", "stacks"):
                    got = model._pixel_logits(x, i, j, labels, cache, vertical)  # (2, C) or (2, C, K)
                    assert torch.allclose(got, full[..., i, j], atol=1e-5), (cache, i, j)
    seeded = partial(model.sample, 2, labels=labels)
    draws = [seeded(generator=SampleRNG(range(2), 5), cache=cache) for cache in ("none", "rows", "stacks")]
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert draws[0].shape == (2, *shape) and draws[0].min() >= -1 and draws[0].max() <= 1


def test_samples_depend_only_on_seed_and_index():
    model = make_model((1, 5, 5), "categorical", ema_decay=0.9)
    one_by_one = model.sample_many(range(3), seed=7, batch_size=1)
    together = model.sample_many(range(3), seed=7, batch_size=3)
    assert torch.equal(one_by_one, together)
    assert torch.equal(model.sample_many([2], seed=7), together[2:])  # sample 2 alone
    assert not torch.equal(model.sample_many(range(3), seed=8), together)
    levels = (together + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and len(levels.unique()) > 2  # 8-bit grey levels


def test_binary_samples_and_greedy_temperature():
    model = make_model((1, 6, 6), "bernoulli")
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) <= {-1.0, 1.0}
    greedy = [model.sample(2, generator=torch.Generator().manual_seed(s), temperature=0.0) for s in (0, 1)]
    assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy[0][0], greedy[0][1])  # no randomness left


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_model(likelihood="poisson"), "unknown pixel likelihood 'poisson'; use one of bernoulli, categ"),
        (lambda: make_model(ema_decay=1.0), "ema_decay must be in [0, 1)"),
        (lambda: make_model((3, 4, 4), net=tiny_net(channels=8)), "must be positive multiples of C=3"),
        (lambda: make_model(net=tiny_net(kernel_size=4)), "kernel_size must be odd and >= 3, got 4"),
        (lambda: make_model(net=tiny_net(first_kernel_size=1)), "first_kernel_size must be odd and >= 3, got 1"),
        (lambda: make_model(net=tiny_net(layers=0)), "layers (0) and logits_per_channel (1) must be >= 1"),
        (lambda: make_model((28, 28)), "PixelCNN models images (C, H, W), got data_shape (28, 28)"),
        (lambda: make_model(conditional=True), "conditional=True needs labelled data"),
    ],
)
def test_bad_options_are_one_clear_line(build, message):
    with pytest.raises(ValueError) as excinfo:
        build()
    assert message in one_line(excinfo)


def test_bad_sampling_options_are_one_clear_line():
    model = make_model()
    for options, message in [
        ({"cache": "rowz"}, "unknown cache 'rowz'; use one of none, rows, stacks"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"steps": 3}, "PixelCNN has no sampling option steps; its options: cache, temperature, step_progress"),
    ]:
        with pytest.raises(ValueError) as excinfo:
            model.sample(1, **options)
        assert message in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        model.sample(1, labels=[0])
    assert "unconditional; sample it without labels" in one_line(excinfo)
    conditional = make_model(num_classes=3, conditional=True)
    with pytest.raises(ValueError) as excinfo:
        conditional.nll(images(1, (1, 6, 6)))
    assert "this PixelCNN is conditional: pass labels" in one_line(excinfo)
