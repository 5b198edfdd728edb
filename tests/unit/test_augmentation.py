"""DiffAugment, the ADA pipeline and the ADA probability controller against closed forms."""

from __future__ import annotations

import io
import math

import pytest
import torch

from genlit.objectives.augmentation import (
    ADA_OPS,
    DIFF_AUGMENT_POLICIES,
    _warp,
    adaptive_augment,
    check_augment_ops,
    check_diffaugment_policy,
    diff_augment,
)
from genlit.objectives.discriminator_augment import AdaptiveAugmentProbability


def images(b: int = 4, c: int = 3, h: int = 16, w: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random images in [-1, 1] with distinct pixel values (so flips and shifts are identifiable)."""
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Same shape, entries within ``atol`` (torch.testing.assert_close costs ~2 s on its first call)."""
    assert actual.shape == expected.shape and (actual - expected).abs().max().item() <= atol


# ----------------------------------------------------------------------------- ADA pipeline


def test_p_zero_is_exact_identity_and_untouched_samples_are_bit_exact():
    x = images()
    assert torch.equal(adaptive_augment(x, 0.0, generator=gen()), x)
    # p > 0 so every stage runs, but so small that no coin comes up: the per-sample selection is exact.
    assert torch.equal(adaptive_augment(x, 1e-12, generator=gen()), x)


def test_xflip_at_p_one_flips_every_image():
    x = images()
    assert torch.equal(adaptive_augment(x, 1.0, ops=["xflip"], generator=gen()), x.flip(3))


def test_xflip_acts_per_sample_with_probability_p():
    n = 2000
    x = images(b=n, c=1, h=4, w=4)
    out = adaptive_augment(x, 0.5, ops=["xflip"], generator=gen(1))
    flipped = (out == x.flip(3)).flatten(1).all(dim=1)  # (n,)
    kept = (out == x).flatten(1).all(dim=1)  # (n,)
    assert bool((flipped ^ kept).all())  # each sample is exactly one of the two
    assert abs(flipped.float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)  # binomial, 5 sigma


def test_rotate_acts_with_probability_p_despite_being_drawn_twice():
    n = 2000
    x = images(b=n, c=1, h=8, w=8)
    out = adaptive_augment(x, 0.5, ops=["rotate"], generator=gen(2))
    changed = (out != x).flatten(1).any(dim=1).float().mean().item()  # 1 - (1 - p_rot)^2 = p
    assert abs(changed - 0.5) < 5 * math.sqrt(0.25 / n)


def test_xint_is_an_integer_shift_of_at_most_an_eighth_with_mirrored_borders():
    x = images(b=16, c=1, h=32, w=32)
    out = adaptive_augment(x, 1.0, ops=["xint"], generator=gen(3))
    m, moved = 4, 0  # 0.125 * 32
    mirrored = torch.nn.functional.pad(x, (m, m, m, m), mode="reflect")  # (16, 1, 40, 40), no edge repeat
    for b in range(x.shape[0]):
        shifts = [
            (dy, dx)
            for dy in range(-m, m + 1)
            for dx in range(-m, m + 1)
            if torch.equal(out[b], mirrored[b, :, m - dy : m - dy + 32, m - dx : m - dx + 32])
        ]
        assert len(shifts) == 1, f"sample {b} is not a shifted copy"
        moved += shifts[0] != (0, 0)
    assert moved >= 12  # the shift is drawn per sample and is rarely zero


def test_rotate90_turns_every_image_by_a_quarter_multiple():
    x = images(b=12)
    out = adaptive_augment(x, 1.0, ops=["rotate90"], generator=gen(4))
    for b in range(12):
        assert any(torch.equal(out[b], torch.rot90(x[b], k, dims=(1, 2))) for k in (1, 2, 3))
    with pytest.raises(ValueError, match="square"):
        adaptive_augment(images(h=8, w=16), 1.0, ops=["rotate90"])


def test_warp_uses_pixel_units_on_non_square_images():
    x = images(b=1, c=2, h=8, w=16)
    shift = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]])  # sample at +3 px x, +1 px y
    out = _warp(x, shift)
    assert_close(out[..., :6, :12], x[..., 1:7, 3:15])
    half_turn = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))[None]  # 180 degrees about the centre
    assert_close(_warp(x, half_turn), x.flip(2, 3))


def test_geometric_ops_pad_by_reflection_so_a_flat_image_stays_flat():
    flat = torch.full((6, 3, 16, 16), 0.3)
    out = adaptive_augment(flat, 1.0, ops=["scale", "rotate", "aniso", "xfrac"], generator=gen(5))
    assert_close(out, flat)


def test_color_ops_match_their_closed_forms_on_rgb():
    x = images(b=6)
    bright = adaptive_augment(x, 1.0, ops=["brightness"], generator=gen(6)) - x  # a constant per sample
    assert_close(bright, bright[:, :1, :1, :1].expand_as(x))
    assert bright.abs().max() > 0.01
    ratio = adaptive_augment(x, 1.0, ops=["contrast"], generator=gen(6)) / x  # a constant factor per sample
    assert_close(ratio, ratio[:, :1, :1, :1].expand_as(x), atol=1e-4)
    assert (ratio - 1).abs().max() > 0.01
    chroma = (x - x.mean(dim=1, keepdim=True)).norm(dim=1)  # (B, H, W)
    for op in ("hue", "saturation"):  # both keep the luma (channel mean) and change the chroma
        out = adaptive_augment(x, 1.0, ops=[op], generator=gen(6))
        assert_close(out.mean(dim=1), x.mean(dim=1))
        assert (out - x).abs().max() > 0.01
        gain = (out - out.mean(dim=1, keepdim=True)).norm(dim=1) / chroma  # (B, H, W)
        assert_close(gain, gain[:, :1, :1].expand_as(gain), atol=1e-4)  # saturation scales chroma per sample
        if op == "hue":
            assert_close(gain, torch.ones_like(gain), atol=1e-4)  # a rotation keeps its length
    flipped = adaptive_augment(x, 1.0, ops=["lumaflip"], generator=gen(6))  # luma negated, chroma kept
    assert_close(flipped.mean(dim=1), -x.mean(dim=1))
    assert_close(flipped - flipped.mean(1, True), x - x.mean(1, True))


def test_color_ops_on_grey_images():
    g = images(c=1)
    assert_close(adaptive_augment(g, 1.0, ops=["hue", "saturation"], generator=gen()), g)
    assert_close(adaptive_augment(g, 1.0, ops=["lumaflip"], generator=gen()), -g)
    out = adaptive_augment(g, 1.0, ops=["brightness", "contrast"], generator=gen())
    assert out.shape == g.shape and (out - g).abs().max() > 0.01
    with pytest.raises(ValueError, match="1 or 3 channels"):
        adaptive_augment(images(c=2), 1.0, ops=["hue"])


def test_adaptive_augment_keeps_shape_and_dtype():
    for dtype in (torch.float32, torch.float64):
        x = images(c=1, dtype=dtype)
        out = adaptive_augment(x, 0.8, generator=gen())
        assert out.shape == x.shape and out.dtype == dtype


# ----------------------------------------------------------------------------- gradients


def test_gradients_flow_through_every_op():
    for augment in (
        lambda t: adaptive_augment(t, 1.0, generator=gen(7)),
        lambda t: diff_augment(t, DIFF_AUGMENT_POLICIES, generator=gen(7)),
    ):
        x = images().requires_grad_(True)
        augment(x).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradients_are_exact_jacobians():
    x = images(b=2, c=3, h=6, w=6, dtype=torch.float64).requires_grad_(True)
    for augment in (
        lambda t: adaptive_augment(t, 1.0, generator=gen(8)),
        lambda t: diff_augment(t, DIFF_AUGMENT_POLICIES, generator=gen(8)),
    ):
        assert torch.autograd.gradcheck(augment, (x,), fast_mode=True)


def test_second_order_gradient_for_r1_through_the_augmentation():
    x = images(b=2).requires_grad_(True)
    out = adaptive_augment(x, 1.0, generator=gen(9))
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", [["color"], ["translation"], ["cutout"], list(DIFF_AUGMENT_POLICIES)])
def test_diff_augment_keeps_shape_and_dtype(channels, policy):
    for dtype in (torch.float32, torch.float64):
        x = images(c=channels, dtype=dtype)
        out = diff_augment(x, policy, generator=gen())
        assert out.shape == x.shape and out.dtype == dtype
        assert not torch.equal(out, x)


def test_diff_translation_zero_pads_a_shift_of_at_most_an_eighth():
    ones = torch.ones(32, 1, 16, 16)
    out = diff_augment(ones, ["translation"], generator=gen(10))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    for b in range(32):
        rows, cols = out[b, 0].any(dim=1).sum().item(), out[b, 0].any(dim=0).sum().item()
        assert rows >= 14 and cols >= 14  # shift <= 2 = 16 / 8
        assert out[b, 0].sum().item() == rows * cols  # the kept pixels form one rectangle
    assert (out == 0).any()


def test_diff_cutout_zeros_one_square_of_half_the_size():
    ones = torch.ones(32, 3, 16, 16)
    out = diff_augment(ones, ["cutout"], generator=gen(11))
    for b in range(32):
        hole = out[b, 0] == 0  # (H, W)
        assert torch.equal(hole, (out[b] == 0).all(dim=0))  # every channel, the same place
        rows, cols = hole.any(dim=1).sum().item(), hole.any(dim=0).sum().item()
        assert 4 <= rows <= 8 and 4 <= cols <= 8 and hole.sum().item() == rows * cols
    assert (out == 0).float().mean(dim=(1, 2, 3)).max() == 0.25  # a full 8 x 8 square somewhere


def test_diff_color_saturation_is_a_no_op_for_grey():
    g = images(c=1)
    out = diff_augment(g, ["color"], generator=gen(12))
    centred_in = g - g.mean(dim=(2, 3), keepdim=True)  # (B, 1, H, W)
    centred_out = out - out.mean(dim=(2, 3), keepdim=True)  # (B, 1, H, W)
    gain = (centred_out * centred_in).sum(dim=(2, 3), keepdim=True) / centred_in.square().sum(dim=(2, 3), keepdim=True)
    assert_close(centred_out, gain * centred_in)  # brightness and contrast only: a per-sample affine map
    assert (gain - 1).abs().max() > 0.01


# ----------------------------------------------------------------------------- names and seeds


def test_unknown_names_raise_one_line_naming_the_allowed_ones():
    x = images()
    cases = [
        (lambda: check_augment_ops(["xflip", "xfilp"]), ADA_OPS),
        (lambda: adaptive_augment(x, 0.0, ops=["bogus"]), ADA_OPS),
        (lambda: check_diffaugment_policy(["colour"]), DIFF_AUGMENT_POLICIES),
        (lambda: diff_augment(x, "color"), DIFF_AUGMENT_POLICIES),  # a bare string, not a list
    ]
    for call, allowed in cases:
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and all(name in message for name in allowed)
    check_augment_ops(ADA_OPS)
    check_diffaugment_policy([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adaptive_augment(x, 1.5)


def test_a_fixed_generator_reproduces_the_augmentation():
    x = images()
    for augment in (
        lambda g: adaptive_augment(x, 0.7, generator=g),
        lambda g: diff_augment(x, DIFF_AUGMENT_POLICIES, generator=g),
    ):
        assert torch.equal(augment(gen(13)), augment(gen(13)))
        assert not torch.equal(augment(gen(13)), augment(gen(14)))


# ----------------------------------------------------------------------------- AdaptiveAugmentProbability


def test_p_adjusts_only_every_interval_calls_by_batch_times_interval_over_speed():
    ada = AdaptiveAugmentProbability(interval=4, speed_images=1000)
    for _ in range(3):
        ada.update(torch.ones(8))
    assert ada.p == 0.0 and ada.r_t is None
    ada.update(torch.ones(8))  # r_t = 1 > 0.6: D overfits, augment more
    assert ada.r_t == 1.0 and ada.p == 8 * 4 / 1000
    for _ in range(4):
        ada.update(torch.ones(8, 1))
    assert ada.p == pytest.approx(2 * 8 * 4 / 1000, abs=1e-15)


def test_p_falls_back_but_not_below_zero_nor_above_max_p():
    ada = AdaptiveAugmentProbability(interval=1, speed_images=100, max_p=0.5)
    for _ in range(20):
        ada.update(torch.full((10,), 3.0))
    assert ada.p == 0.5
    ada.update(torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0]))  # r_t = 0.6 = target: no move
    assert ada.p == 0.5
    ada.update(torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]))  # r_t = 0.4 < 0.6
    assert ada.r_t == pytest.approx(0.4) and ada.p == pytest.approx(0.4)
    for _ in range(10):
        ada.update(-torch.ones(10))
    assert ada.p == 0.0 and ada.r_t == -1.0


def test_reduce_sums_over_ranks_at_the_interval_only():
    calls = []

    def two_identical_ranks(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.clone())
        return t * 2

    ada = AdaptiveAugmentProbability(interval=2, speed_images=1000)
    for _ in range(2):
        ada.update(torch.tensor([1.0, 1.0, 1.0, -1.0]), reduce=two_identical_ranks)
    assert len(calls) == 1 and calls[0].tolist() == [4.0, 8.0]  # [sign_sum, count] on this rank
    assert ada.r_t == 0.5 and ada.p == 0.0  # r_t < target from 0: stays at 0
    ada = AdaptiveAugmentProbability(interval=2, speed_images=1000)
    for _ in range(2):
        ada.update(torch.ones(4), reduce=two_identical_ranks)
    assert ada.p == 2 * 4 * 2 / 1000 and ada.accumulator is None  # the global batch counts


def test_state_dict_round_trip_resumes_p_and_the_pending_accumulator():
    ada = AdaptiveAugmentProbability(interval=4, speed_images=500)
    logits = [torch.randn(6, generator=gen(i)) + 1.5 for i in range(14)]
    for t in logits[:6]:  # one adjustment and two pending batches
        ada.update(t)
    buffer = io.BytesIO()
    torch.save(ada.state_dict(), buffer)
    buffer.seek(0)
    resumed = AdaptiveAugmentProbability(interval=4, speed_images=500)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.p == ada.p and resumed.r_t == ada.r_t
    for t in logits[6:]:
        ada.update(t)
        resumed.update(t)
        assert resumed.p == ada.p and resumed.r_t == ada.r_t
    assert ada.p > 0


def test_controller_rejects_bad_settings():
    for kwargs in ({"interval": 0}, {"speed_images": 0}, {"p": 1.5}, {"p": 0.6, "max_p": 0.5}, {"target": 2.0}):
        with pytest.raises(ValueError):
            AdaptiveAugmentProbability(**kwargs)
    with pytest.raises(ValueError, match="batch dimension"):
        AdaptiveAugmentProbability().update(torch.tensor(1.0))
