"""Normalizing flows: every layer and the multi-scale net invert and report log|det J| exactly, the dequantized
bits/dim of known densities, actnorm's one-time data-dependent initialization (checkpoints, DDP), temperature
and per-sample seeding of the family, and one-line errors.

Inversion is checked in float32 to atol 1e-5 (the layers' own float rounding is ~1e-6); log-determinants in
float64 against ``torch.autograd.functional.jacobian`` to 1e-8.
"""

import math
import socket
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from genlit.families.flow import Flow
from genlit.nets.flows import (
    ActNorm,
    AffineCoupling,
    FlowStep,
    GaussianPrior,
    InvertibleConv1x1,
    MultiScaleFlow,
    SplitPrior,
    Squeeze,
)
from genlit.objectives.dequantization import logit_transform
from genlit.seeding import SampleRNG
from tests.unit.actnorm_ddp import initialize_on_rank

SHAPE = (1, 8, 8)
LAYERS = {
    "squeeze": lambda c: Squeeze(),
    "actnorm": lambda c: ActNorm(c),
    "invconv_lu": lambda c: InvertibleConv1x1(c, lu=True),
    "invconv_full": lambda c: InvertibleConv1x1(c, lu=False),
    "coupling": lambda c: AffineCoupling(c, hidden=8),
    "step": lambda c: FlowStep(c, hidden=8),
    "split_prior": lambda c: SplitPrior(c),
    "gaussian_prior": lambda c: GaussianPrior((c, 4, 4)),
}


def perturbed(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Random weights everywhere (zero-initialized convs and priors would make the maps trivial)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def tiny_net(**kwargs) -> MultiScaleFlow:
    return MultiScaleFlow(SHAPE, **({"levels": 2, "steps": 2, "hidden": 8} | kwargs))


def make_flow(**kwargs) -> Flow:
    return Flow(partial(MultiScaleFlow, levels=2, steps=2, hidden=8), data_shape=SHAPE, **kwargs)


def eight_bit(n: int, seed: int = 0) -> torch.Tensor:
    """Model-space 8-bit data (n, *SHAPE)."""
    return torch.randint(0, 256, (n, *SHAPE), generator=torch.Generator().manual_seed(seed)) / 127.5 - 1


def jacobian_logdet(fn, x: torch.Tensor) -> float:
    """log|det J| of fn at one example x (1, ...), fn mapping (1, ...) to (1, ...) of the same size."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).flatten(), x.flatten())  # (D, D)
    return float(torch.linalg.slogdet(jac)[1])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_inverts_to_float_precision(name):
    layer = perturbed(LAYERS[name](4)).eval()
    x = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    with torch.no_grad():
        y, logdet = layer(x)
        assert logdet.shape == (3,) and y.numel() == x.numel()
        assert (layer.inverse(y) - x).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_logdet_is_log_abs_det_jacobian(name):
    layer = perturbed(LAYERS[name](4)).double().eval()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = jacobian_logdet(lambda v: layer(v)[0], x)
    assert float(layer(x)[1][0]) == pytest.approx(expected, abs=1e-8)
    if name != "squeeze":  # a permutation has log|det| 0; every other perturbed layer must not
        assert abs(expected) > 1e-3


@pytest.mark.parametrize("lu", [True, False])
def test_whole_net_inverts_and_its_logdet_is_exact(lu):
    net = perturbed(tiny_net(lu=lu), 0.05).eval()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps, _ = net(x)
        assert eps.shape == (4, 64)
        assert (net.inverse(eps) - x).abs().max() < 1e-5  # float32
        assert (net(net.inverse(eps))[0] - eps).abs().max() < 1e-4  # and back (eps is larger in scale)
    small = perturbed(MultiScaleFlow((1, 4, 4), levels=2, steps=1, hidden=4, lu=lu), 0.3).double().eval()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = jacobian_logdet(lambda v: small(v)[0], x)
    assert float(small(x)[1][0]) == pytest.approx(expected, abs=1e-8)
    log_normal = -0.5 * (small(x)[0].square() + math.log(2 * math.pi)).sum()
    assert float(small.log_prob(x)[0]) == pytest.approx(float(log_normal) + expected, abs=1e-8)


def test_logit_preprocessing_logdet_is_exact():
    y = torch.rand(1, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = jacobian_logdet(lambda v: logit_transform(v, 0.05)[0], y)
    assert float(logit_transform(y, 0.05)[1][0]) == pytest.approx(expected, abs=1e-10)


class _LogisticNet(nn.Module):
    """A 'net' whose density of v is the standard logistic per dimension: sigmoid(v) is uniform on (0, 1)."""

    def __init__(self, data_shape, num_classes=0) -> None:
        super().__init__()

    def log_prob(self, v):
        return (-F.softplus(-v) - F.softplus(v)).flatten(1).sum(1)


class _UniformNet(_LogisticNet):
    """The uniform density on [-1/2, 1/2)^D (log p = 0 there): with ``center`` preprocessing, uniform y."""

    def log_prob(self, v):
        assert v.min() >= -0.5 and v.max() < 0.5
        return torch.zeros(len(v))


def test_bits_per_dim_of_known_densities():
    x = eight_bit(16)
    uniform = Flow(_UniformNet, data_shape=SHAPE, preprocessing="center", nll_samples=3)
    nll = uniform.nll(x)
    assert torch.allclose(nll, torch.full((16,), 64 * math.log(256)))  # D log 256 nats
    assert torch.allclose(uniform.bits_per_dim(nll), torch.full((16,), 8.0))  # exactly 8 bits/dim
    # logistic density on logit(alpha + (1 - 2 alpha) y): y is uniform with density (1 - 2 alpha) on [0, 1)
    logistic = Flow(_LogisticNet, data_shape=SHAPE, preprocessing="logit", logit_alpha=0.05)
    expected = 8 - math.log2(0.9)  # 8.152: the logit transform's log-determinant is counted
    assert torch.allclose(logistic.bits_per_dim(logistic.nll(x)), torch.full((16,), expected), atol=1e-5)


def test_importance_weighted_nll_lies_between_its_single_sample_bounds():
    model = perturbed(make_flow(), 0.3).eval()
    x = eight_bit(8)
    seeded = partial(torch.Generator().manual_seed, 3)
    with torch.no_grad():
        generator = seeded()  # the same 8 dequantizations, drawn one at a time
        singles = torch.stack([model.nll(x, generator=generator, samples=1) for _ in range(8)])  # (8, B)
        weighted = model.nll(x, generator=seeded(), samples=8)  # (B,)
        again = model.nll(x, generator=seeded(), samples=8)
    assert torch.equal(weighted, again)  # seeded: validation and test figures are reproducible
    assert (weighted <= singles.mean(0) + 1e-4).all() and (weighted >= singles.min(0).values - 1e-4).all()
    assert (weighted < singles.mean(0) - 1e-4).any()  # Jensen: strictly tighter where the draws disagree


def test_actnorm_initializes_once_from_the_first_training_batch():
    layer = ActNorm(3).train()
    first = torch.randn(16, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 4.0
    y, _ = layer(first)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert bool(layer.initialized)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(torch.randn(16, 3, 5, 5) * 9)  # a second batch: no re-initialization
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    fresh = ActNorm(3).eval()
    fresh(first)  # eval mode (Lightning's sanity check, sampling) never initializes
    assert not bool(fresh.initialized) and torch.equal(fresh.log_scale, torch.zeros(1, 3, 1, 1))


def _actnorm_params(model: Flow) -> list[torch.Tensor]:
    return [t.detach().clone() for m in model.modules() if isinstance(m, ActNorm) for t in (m.loc, m.log_scale)]


def test_actnorm_is_not_reinitialized_after_loading_a_checkpoint(tmp_path):
    trained = make_flow().train()
    trained.nll(eight_bit(32, seed=1))  # the first training forward initializes every actnorm
    torch.save(trained.state_dict(), tmp_path / "flow.pt")
    loaded = make_flow().train()
    loaded.load_state_dict(torch.load(tmp_path / "flow.pt", weights_only=True))
    loaded.nll(eight_bit(32, seed=2) * 0.5)  # other data: a re-initialization would change the parameters
    assert all(torch.equal(a, b) for a, b in zip(_actnorm_params(trained), _actnorm_params(loaded), strict=True))
    control = make_flow().train()  # the same forward without the loaded flags does initialize
    control.load_state_dict(
        {k: v for k, v in trained.state_dict().items() if not k.endswith("initialized")}, strict=False
    )
    control.nll(eight_bit(32, seed=2) * 0.5)
    assert not all(torch.equal(a, b) for a, b in zip(_actnorm_params(trained), _actnorm_params(control), strict=True))


def test_actnorm_initializes_from_every_ranks_batch_under_ddp(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    batches = torch.randn(2, 8, 3, 4, 4) + torch.tensor([0.0, 5.0]).view(2, 1, 1, 1, 1)  # ranks see different data
    mp.spawn(initialize_on_rank, args=(port, batches, str(tmp_path / "rank")), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank.{r}", weights_only=True) for r in (0, 1)]
    whole = ActNorm(3).train()
    whole(batches.flatten(0, 1))  # one process, both batches
    for state in ranks:
        assert torch.allclose(state["loc"], whole.loc, atol=1e-6)
        assert torch.allclose(state["log_scale"], whole.log_scale, atol=1e-6)


def test_temperature_zero_is_the_mean_path_and_temperature_scales_the_noise():
    model = perturbed(make_flow(), 0.05)
    mean_a = model.sample(3, generator=torch.Generator().manual_seed(0), temperature=0.0)
    mean_b = model.sample(3, generator=torch.Generator().manual_seed(1), temperature=0.0)
    with torch.no_grad():
        expected = model.postprocess(model.net.eval().inverse(torch.zeros(1, 64)))
    assert torch.equal(mean_a, mean_b)  # no noise at all: the seed does not matter
    assert torch.allclose(mean_a[0], ((256 * expected[0] - 0.5) / 127.5 - 1).clamp(-1, 1))
    rng = partial(SampleRNG, range(3), 5)
    cool, hot = model.sample(3, generator=rng(), temperature=0.7), model.sample(3, generator=rng(), temperature=1.0)
    assert cool.shape == (3, *SHAPE) and cool.min() >= -1 and cool.max() <= 1
    assert not torch.allclose(cool, hot, atol=1e-3)
    # the same noise scaled: at temperature t the net's inverse sees t * eps
    eps = SampleRNG(range(3), 5).randn(64)
    with torch.no_grad():
        direct = model.postprocess(model.net.inverse(0.7 * eps))
    assert torch.allclose(cool, ((256 * direct - 0.5) / 127.5 - 1).clamp(-1, 1), atol=1e-6)


def test_sample_i_does_not_depend_on_the_batch_size():
    model = perturbed(make_flow(), 0.05)
    ones = model.sample_many(range(3), seed=7, batch_size=1, temperature=0.7)
    three = model.sample_many(range(3), seed=7, batch_size=3, temperature=0.7)
    assert torch.allclose(ones, three, atol=1e-5)
    assert torch.allclose(model.sample_many([2], seed=7, temperature=0.7)[0], three[2], atol=1e-5)
    assert not torch.allclose(three[0], three[1], atol=1e-3)  # each sample its own noise


def test_the_loss_reaches_every_parameter():
    model = perturbed(make_flow(), 0.05).train()
    model.bits_per_dim(model.nll(eight_bit(8))).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: make_flow(conditional=True, num_classes=10), "Flow is unconditional; use conditional: false"),
        (lambda: make_flow(preprocessing="sigmoid"), "unknown preprocessing 'sigmoid'; use one of logit, center"),
        (lambda: make_flow(logit_alpha=0.5), r"logit_alpha must lie in \(0, 0.5\), got 0.5"),
        (lambda: make_flow(nll_samples=0), "nll_samples must be >= 1, got 0"),
        (lambda: MultiScaleFlow((1, 28, 28), levels=3), "H and W divisible by 8, got data_shape"),
        (lambda: MultiScaleFlow((1, 28, 28), num_classes=10), "MultiScaleFlow is unconditional"),
        (lambda: MultiScaleFlow((1, 28, 28), steps=0), "needs levels, steps and hidden >= 1"),
        (lambda: make_flow().sample(2, temperature=-1.0), "temperature must be a finite number >= 0, got -1.0"),
        (lambda: make_flow().sample(2, temperature=float("nan")), "temperature must be a finite number >= 0"),
        (lambda: make_flow().sample(2, steps=3), "Flow has no sampling option steps; its options: temperature"),
        (lambda: make_flow().sample(2, labels=[0, 1]), "this Flow is unconditional; sample it without labels"),
    ],
)
def test_bad_options_are_one_clear_error(build, message):
    with pytest.raises(ValueError, match=message) as err:
        build()
    assert "\n" not in str(err.value)
