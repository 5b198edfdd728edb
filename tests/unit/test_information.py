"""The auxiliary heads of the DCGAN discriminator and the losses on them (ACGAN's classifier, InfoGAN's Q)."""

import math

import pytest
import torch
from torch import nn

from genlit.nets.dcgan import AuxiliaryHead, DCGANDiscriminator
from genlit.objectives.information import (
    CodeLayout,
    LatentCodes,
    class_loss,
    gaussian_nll,
    information_loss,
    split_q_outputs,
)


@pytest.mark.parametrize(("size", "aux_hidden"), [(28, 0), (32, 16), (64, 0)])
def test_discriminator_heads_share_one_pass_and_have_their_shapes(size, aux_hidden):
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, size, size), width=8, aux_outputs=12, aux_hidden=aux_hidden).eval()
    x = torch.randn(5, 1, size, size)
    adversarial, aux = d.heads(x)
    assert adversarial.shape == (5,) and aux.shape == (5, 12)
    torch.testing.assert_close(adversarial, d(x))  # forward stays the adversarial output alone
    features = d.features(x).flatten(1)
    torch.testing.assert_close(aux, d.aux(features))
    hidden = [m for m in d.aux.modules() if isinstance(m, nn.Linear)]
    assert len(hidden) == (2 if aux_hidden else 1)  # InfoGAN's Q: FC hidden, BN, LeakyReLU, FC


def test_heads_need_an_auxiliary_head_and_spectral_norm_covers_it():
    with pytest.raises(ValueError, match="has no auxiliary head; build it with aux_outputs >= 1"):
        DCGANDiscriminator((1, 28, 28), width=8).heads(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="out_features >= 1 and hidden >= 0"):
        AuxiliaryHead(16, 4, hidden=-1)
    d = DCGANDiscriminator((1, 28, 28), width=8, norm="none", spectral_norm=True, aux_outputs=10, aux_hidden=8)
    linears = [m for m in d.aux.modules() if isinstance(m, nn.Linear)]
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linears)
    assert d.aux.net[0].bias is not None  # no norm after the hidden layer: it keeps its bias


def test_class_loss_is_the_cross_entropy_of_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    row0 = -(2.0 - math.log(math.exp(2.0) + 1.0 + math.exp(-1.0)))
    row1 = -(0.5 - math.log(2 * math.exp(0.5) + math.exp(3.0)))
    assert class_loss(logits, labels).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_gaussian_nll_matches_torch_distributions():
    torch.manual_seed(0)
    values, mean, log_std = torch.rand(6, 2) * 2 - 1, torch.randn(6, 2), 0.3 * torch.randn(6, 2)
    expected = -torch.distributions.Normal(mean, log_std.exp()).log_prob(values).sum(dim=1).mean()
    torch.testing.assert_close(gaussian_nll(values, mean, log_std), expected)
    fixed = -torch.distributions.Normal(mean, 1.0).log_prob(values).sum(dim=1).mean()
    torch.testing.assert_close(gaussian_nll(values, mean), fixed)


@pytest.mark.parametrize("learn_std", [False, True])
def test_information_loss_matches_a_hand_computation(learn_std):
    torch.manual_seed(1)
    layout = CodeLayout(num_categories=4, num_continuous=2, learn_std=learn_std)
    q = torch.randn(8, layout.q_outputs)
    codes = LatentCodes(torch.randint(4, (8,)), torch.rand(8, 2) * 2 - 1)
    loss, terms = information_loss(q, codes, layout, categorical_weight=1.0, continuous_weight=0.1)
    log_probs = q[:, :4] - q[:, :4].exp().sum(dim=1, keepdim=True).log()
    ce = -log_probs[torch.arange(8), codes.category].mean()
    std = q[:, 6:].exp() if learn_std else torch.ones(8, 2)
    nll = (0.5 * ((codes.continuous - q[:, 4:6]) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).sum(1).mean()
    torch.testing.assert_close(loss, ce + 0.1 * nll)
    torch.testing.assert_close(terms["info_categorical"], ce)
    torch.testing.assert_close(terms["info_continuous"], nll)
    torch.testing.assert_close(terms["mi_categorical"], math.log(4) - ce)
    assert terms["code_accuracy"] == (q[:, :4].argmax(1) == codes.category).float().mean()


def test_information_loss_is_minimized_where_q_recovers_the_codes():
    """Gradient descent on Q's raw outputs drives the loss to its minimum (CE -> 0, NLL -> log(2 pi)/2 per code
    with std 1), where Q's argmax is every category and its means are the continuous codes."""
    torch.manual_seed(2)
    layout = CodeLayout(num_categories=10, num_continuous=2)
    codes = LatentCodes(torch.randint(10, (32,)), torch.rand(32, 2) * 2 - 1)
    q = torch.zeros(32, layout.q_outputs, requires_grad=True)
    start, _ = information_loss(q, codes, layout)
    optimizer = torch.optim.Adam([q], lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        information_loss(q, codes, layout)[0].backward()
        optimizer.step()
    loss, terms = information_loss(q, codes, layout)
    floor = 2 * 0.5 * math.log(2 * math.pi)  # the NLL of two std-1 Gaussians at their means
    assert start.item() > math.log(10) + floor
    assert loss.item() == pytest.approx(floor, abs=0.02) and terms["code_accuracy"] == 1.0
    torch.testing.assert_close(q[:, 10:12].detach(), codes.continuous, atol=0.02, rtol=0)
    assert terms["mi_categorical"].item() == pytest.approx(math.log(10), abs=0.02)
    shuffled = LatentCodes(codes.category.roll(1), codes.continuous.roll(1, dims=0))
    assert information_loss(q, shuffled, layout)[0] > loss + 1.0  # Q that does not recover them: higher


def test_q_outputs_are_checked_against_the_layout():
    layout = CodeLayout(10, 2, learn_std=True)
    assert layout.q_outputs == 14 and layout.input_dim == 12
    logits, mean, log_std = split_q_outputs(torch.randn(3, 14), layout)
    assert logits.shape == (3, 10) and mean.shape == (3, 2) and log_std.shape == (3, 2)
    with pytest.raises(ValueError, match="Q has 12 outputs; .* need 14"):
        split_q_outputs(torch.randn(3, 12), layout)
