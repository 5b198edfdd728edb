"""Diffusion Transformer: shapes, adaLN-Zero identity init, conditioning on t and y, errors, grads, the family."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from genlit.diffusion import DDIMSampler, LinearSchedule
from genlit.families.diffusion import Diffusion
from genlit.nets.dit import DiT, DiTBlock, sincos_position_embedding

TINY = {"hidden_size": 32, "depth": 2, "num_heads": 4}


def _trained_step(net: DiT, *shape: int, steps: int = 3) -> DiT:
    """A few Adam steps on a random regression target, so the zero-initialised layers stop blocking the signal:
    the first moves only the output linear (every other gradient passes through its zero weights), the second
    the adaLN modulations, the third everything else."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, target = torch.randn(4, *shape), torch.randn(4, *shape)
    y = torch.arange(4) % (net.num_classes + 1) if net.num_classes else None
    for _ in range(steps):
        loss = (net(x, torch.tensor([1.0, 10.0, 100.0, 900.0]), y) - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return net


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_output_shape_matches_input(shape):
    torch.manual_seed(0)
    net = _trained_step(DiT(shape, 0, **TINY), *shape)
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([3, 500]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.std() > 0


def test_unpatchify_inverts_the_patch_layout():
    net = DiT((3, 8, 12), 0, patch_size=4, **TINY)  # a 2x3 grid of 4x4 patches, not square
    x = torch.randn(2, 3, 8, 12)
    patches = x.reshape(2, 3, 2, 4, 3, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 6, 48)  # (B, N, p, p, C) per token
    assert torch.equal(net.unpatchify(patches), x)


def test_fresh_net_returns_exact_zeros():
    torch.manual_seed(0)
    net = DiT((1, 28, 28), 10, **TINY)
    out = net(torch.randn(3, 1, 28, 28), torch.tensor([0.0, 10.0, 999.0]), torch.tensor([0, 5, net.null_label]))
    assert torch.equal(out, torch.zeros_like(out))


def test_every_block_starts_as_the_identity():
    torch.manual_seed(0)
    net = DiT((1, 28, 28), 10, **TINY)
    tokens, c = torch.randn(2, 196, 32), torch.randn(2, 32)
    for block in net.blocks:
        assert isinstance(block, DiTBlock)
        assert torch.equal(block(tokens, c), tokens)


def test_position_embedding_is_a_fixed_buffer():
    net = DiT((1, 28, 28), 0, **TINY)
    assert "pos_embed" not in dict(net.named_parameters()) and "pos_embed" not in net.state_dict()
    assert net.pos_embed.shape == (1, 196, 32)
    torch.testing.assert_close(net.pos_embed[0], sincos_position_embedding(14, 14, 32))
    assert torch.cdist(net.pos_embed[0], net.pos_embed[0]).add(torch.eye(196)).min() > 1e-3  # distinct tokens


def test_output_depends_on_label_and_float_time():
    torch.manual_seed(0)
    net = _trained_step(DiT((1, 28, 28), 10, **TINY), 1, 28, 28)
    assert net.null_label == 10 and net.label_embed.num_embeddings == 11
    x = torch.randn(1, 1, 28, 28).expand(3, -1, -1, -1)  # one image, three labels
    t = torch.full((3,), 0.37)  # float (scaled) time
    out = net(x, t, torch.tensor([2, 7, net.null_label]))
    assert torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-5
    assert (out[0] - out[2]).abs().max() > 1e-5
    y = torch.tensor([2, 2, 2])
    later = net(x, torch.tensor([0.37, 1.37, 500.0]), y)
    assert (later[0] - later[1]).abs().max() > 1e-5 and (later[0] - later[2]).abs().max() > 1e-5
    torch.testing.assert_close(net(x, torch.tensor(0.37), y), net(x, t, y))  # 0-d t is broadcast


def test_unconditional_net_ignores_labels():
    torch.manual_seed(0)
    net = _trained_step(DiT((3, 32, 32), 0, **TINY), 3, 32, 32)
    assert net.null_label is None and net.label_embed is None
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 9])
    torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([1, 4])))


def test_conditional_net_needs_labels():
    net = DiT((1, 28, 28), 10, **TINY)
    with pytest.raises(ValueError, match="class-conditional"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"labels y of shape \(2,\)"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_bad_patch_size_and_heads_name_the_fix():
    with pytest.raises(ValueError, match=r"patch_size 3 does not divide the 28x28 image.*divides 28 \(2, 4, 7, 14\)"):
        DiT((1, 28, 28), 0, patch_size=3, **TINY)
    with pytest.raises(ValueError, match=r"num_heads 3 does not divide hidden_size 32"):
        DiT((1, 28, 28), 0, hidden_size=32, depth=1, num_heads=3)


def test_wrong_input_shapes_fail_clearly():
    net = DiT((1, 28, 28), 0, **TINY)
    with pytest.raises(ValueError, match=r"x of shape \(B, 1, 28, 28\)"):
        net(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"timesteps t of shape \(2,\)"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = _trained_step(DiT((1, 28, 28), 3, **TINY), 1, 28, 28)  # no zero layer left
    y = torch.tensor([0, 1, 2, net.null_label])  # every embedding row is used
    out = net(torch.randn(4, 1, 28, 28), torch.tensor([1.0, 10.0, 100.0, 900.0]), y)
    out.square().mean().backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead


def test_default_net_size_for_cpu():
    net = DiT((1, 28, 28), 10)
    assert sum(p.numel() for p in net.parameters()) == 707_428 + 11 * 96  # the figure in the module docstring


@pytest.mark.parametrize("conditional", [False, True])
def test_diffusion_family_trains_a_tiny_dit(conditional):
    torch.manual_seed(0)
    net = partial(DiT, patch_size=2, hidden_size=16, depth=1, num_heads=2)
    model = Diffusion(
        net, (1, 8, 8), num_classes=3, conditional=conditional, schedule=LinearSchedule(20), sampler=DDIMSampler(4)
    )
    assert isinstance(model.net, DiT) and model.null_label == (3 if conditional else None)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(3, (4,))
    loss = model.training_step((x, y), 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.net.final.linear.weight.grad.abs().max() > 0  # the zero output layer learns first
