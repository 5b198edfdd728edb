"""Adversarial losses, WGAN-GP gradient penalty and R1 against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlit.nets.dcgan import DCGANDiscriminator
from genlit.objectives.adversarial import (
    check_loss_name,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


# D: mean softplus(-real) + mean softplus(fake); G: mean softplus(-fake)
NS_D = 0.5 * (softplus(-2.0) + softplus(1.0)) + 0.5 * (softplus(0.5) + softplus(-3.0))  # 1.231427
NS_G = 0.5 * (softplus(-0.5) + softplus(3.0))  # 1.761332


@pytest.mark.parametrize(
    "name, d_expected, g_expected",
    [
        ("non_saturating", NS_D, NS_G),
        # D: mean relu(1 - [2, -1]) + mean relu(1 + [0.5, -3]) = mean(0, 2) + mean(1.5, 0) = 1 + 0.75
        # G: -mean([0.5, -3]) = 1.25
        ("hinge", 1.75, 1.25),
        # D: mean(fake) - mean(real) = -1.25 - 0.5; G: -mean(fake) = 1.25
        ("wasserstein", -1.75, 1.25),
        # D: 0.5 * mean((2-1)^2, (-1-1)^2) + 0.5 * mean(0.5^2, 3^2) = 0.5 * 2.5 + 0.5 * 4.625 = 3.5625
        # G: 0.5 * mean((0.5-1)^2, (-3-1)^2) = 0.5 * mean(0.25, 16) = 4.0625
        ("least_squares", 3.5625, 4.0625),
    ],
)
def test_losses_by_hand(name, d_expected, g_expected):
    d = discriminator_loss(name, REAL, FAKE)
    g = generator_loss(name, FAKE)
    assert d.shape == () and g.shape == ()
    assert d.item() == pytest.approx(d_expected, abs=1e-6)
    assert g.item() == pytest.approx(g_expected, abs=1e-6)


def test_non_saturating_numbers_and_stability():
    assert NS_D == pytest.approx(1.231427, abs=1e-6)
    assert NS_G == pytest.approx(1.761332, abs=1e-6)
    big = torch.tensor([1000.0])
    assert discriminator_loss("non_saturating", big, -big).item() == pytest.approx(0.0, abs=1e-6)
    assert generator_loss("non_saturating", -big).item() == pytest.approx(1000.0)
    fake = torch.tensor([-1000.0], requires_grad=True)
    generator_loss("non_saturating", fake).backward()
    assert fake.grad.item() == pytest.approx(-1.0)  # non-saturating: gradient does not vanish


def test_losses_float32_under_bf16():
    real, fake = REAL.bfloat16(), FAKE.bfloat16()  # these values are exact in bf16
    d = discriminator_loss("hinge", real, fake)
    assert d.dtype == torch.float32 and d.item() == pytest.approx(1.75)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown adversarial loss 'vanilla'.*non_saturating, hinge"):
        discriminator_loss("vanilla", REAL, FAKE)
    with pytest.raises(ValueError, match="least_squares"):
        generator_loss("lsgan", FAKE)
    with pytest.raises(ValueError, match="wasserstein"):
        check_loss_name("wgan")
    check_loss_name("hinge")  # no error


def test_gradient_penalty_linear_critic_images():
    # critic(x) = sum(w * x) -> gradient w at every x_hat -> penalty (||w|| - 1)^2
    w = torch.tensor([[[1.0, 2.0], [2.0, 4.0]]])  # (1, 2, 2), ||w|| = sqrt(1 + 4 + 4 + 16) = 5
    critic = lambda x: (w * x).sum(dim=(1, 2, 3))  # noqa: E731
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)


def test_gradient_penalty_unit_norm_linear_critic_is_zero():
    w = torch.tensor([0.6, 0.8])  # ||w|| = 1
    critic = lambda x: x @ w  # noqa: E731
    assert gradient_penalty(critic, torch.randn(5, 2), torch.randn(5, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_penalty_quadratic_critic_with_alpha():
    # critic(x) = 0.5 ||x||^2 -> gradient x_hat
    critic = lambda x: 0.5 * x.square().sum(dim=1)  # noqa: E731
    real = torch.tensor([[6.0, 8.0], [0.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    alpha = torch.tensor([0.5, 0.25])
    # x_hat = [[3, 4], [0, 1.5]]: norms 5 and 1.5 -> ((5-1)^2 + (1.5-1)^2) / 2 = (16 + 0.25) / 2
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(8.125)


def test_gradient_penalty_differentiable_wrt_critic_and_fake_detached():
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    gen_param = torch.tensor(1.0, requires_grad=True)
    fake = gen_param * torch.randn(4, 2)  # depends on a "generator" parameter
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), torch.randn(4, 2), fake)
    assert gp.item() == pytest.approx(16.0)
    gp.backward()
    # d (||w|| - 1)^2 / dw = 2 (||w|| - 1) w / ||w|| = 2 * 4 * [3, 4] / 5
    torch.testing.assert_close(critic.weight.grad, torch.tensor([[4.8, 6.4]]))
    assert gen_param.grad is None


def test_gradient_penalty_dcgan_critic_and_autocast():
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 28, 28), width=8, norm="layer")
    real, fake = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(d, real, fake)
    assert gp.dtype == torch.float32 and torch.isfinite(gp)
    gp.backward()
    # every weight gets a gradient (biases before piecewise-linear units may not: zero second derivative)
    weights = [m.weight for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == 3 and all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_gradient_penalty_linear_critic_under_bf16_autocast():
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(lambda x: critic(x).squeeze(1), torch.randn(4, 2), torch.randn(4, 2))
    assert gp.dtype == torch.float32 and gp.item() == pytest.approx(16.0, rel=1e-2)


def test_r1_on_known_function_both_call_styles():
    # critic(x) = 0.5 ||x||^2 -> gradient x -> R1 = mean ||x||^2 = (25 + 1) / 2
    critic = lambda x: 0.5 * x.square().sum(dim=1)  # noqa: E731
    real = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert r1_penalty(critic, real).item() == pytest.approx(13.0)
    real_g = real.clone().requires_grad_(True)
    real_logits = critic(real_g)  # the forward the D step needs anyway
    r1 = r1_penalty(real_logits, real_g)
    assert r1.item() == pytest.approx(13.0)
    # the logits' graph is still usable for the loss after the penalty
    (discriminator_loss("hinge", real_logits, torch.zeros(2)) + r1).backward()


def test_r1_differentiable_wrt_critic():
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    r1 = r1_penalty(lambda x: critic(x).squeeze(1), torch.randn(3, 2))
    assert r1.item() == pytest.approx(25.0)  # ||w||^2
    r1.backward()
    torch.testing.assert_close(critic.weight.grad, torch.tensor([[6.0, 8.0]]))  # d ||w||^2 / dw = 2w


def test_r1_tensor_form_needs_requires_grad():
    critic = lambda x: x.sum(dim=1)  # noqa: E731
    real = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"requires_grad_\(True\) before the discriminator forward"):
        r1_penalty(critic(real), real)
