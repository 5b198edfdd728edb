"""VQ-VAE: straight-through gradients, the EMA codebook against a hand computation, the commitment loss, dead-code
restarts (on one process and identically on two DDP ranks), codebook perplexity, encode/decode shapes and one-line
errors."""

import socket
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp

from genlit.families.protocols import DiscreteLatent, Reconstructs
from genlit.families.vqvae import VQVAE
from genlit.metrics.codebook import CodeUsage, codes_in_use, perplexity
from genlit.nets.vqvae import VectorQuantizer, VQDecoder, VQEncoder
from genlit.objectives.vector_quantization import commitment_loss, reconstruction_loss
from tests.unit.vqvae_ddp import quantizer, update_on_rank

CODEBOOK = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])  # (K, D) = (4, 2)


def grid(vectors: list[list[float]]) -> torch.Tensor:
    """Vectors (N, D) as an encoder's output grid (1, D, 1, N)."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :].contiguous()


def make_vqvae(**kwargs) -> VQVAE:
    encoder = partial(VQEncoder, width=8, res_blocks=1, res_hidden=4)
    decoder = partial(VQDecoder, width=8, res_blocks=1, res_hidden=4)
    args = {"data_shape": (1, 28, 28), "embedding_dim": 4} | kwargs
    return VQVAE(encoder, decoder, partial(VectorQuantizer, num_codes=16, data_init=False), **args)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_decoders_gradient_reaches_the_encoder_unchanged():
    torch.manual_seed(0)
    encoder, decoder = VQEncoder((1, 28, 28), 4, width=8), VQDecoder((1, 28, 28), 4, width=8)
    layer = VectorQuantizer(4, num_codes=8).train()
    x = images(3)
    z_e = encoder(x)  # (3, 4, 7, 7)
    q = layer(z_e)
    loss = reconstruction_loss("mse", decoder(q.z_q), x)
    grad_e, grad_q = torch.autograd.grad(loss, [z_e, q.z_q])
    assert grad_q.abs().sum() > 0 and torch.equal(grad_e, grad_q)
    assert torch.allclose(q.z_q, q.codes, atol=1e-6)  # the forward value is the codes'
    assert not torch.equal(q.codes, layer.embed(q.indices))  # the codes were looked up before the EMA moved them


def test_ema_update_matches_a_hand_computation():
    layer = quantizer(CODEBOOK[:3], restart_after=0)  # codes (0,0), (10,0), (0,10); decay 0.5, eps 0.1
    q = layer(grid([[1, 0], [0, 1], [9, 1]]))
    assert q.indices.flatten().tolist() == [0, 0, 1] and q.counts.tolist() == [2, 1, 0]
    # N = 0.5 * 1 + 0.5 * n = (1.5, 1, 0.5); m = 0.5 * e + 0.5 * sums = ((0.5, 0.5), (9.5, 0.5), (0, 5))
    assert torch.allclose(layer.cluster_size, torch.tensor([1.5, 1.0, 0.5]))
    assert torch.allclose(layer.embed_sum, torch.tensor([[0.5, 0.5], [9.5, 0.5], [0.0, 5.0]]))
    # Laplace: N' = (N + 0.1) / (3 + 3 * 0.1) * 3 = (16/11, 1, 6/11); e = m / N'
    expected = torch.tensor([[0.34375, 0.34375], [9.5, 0.5], [0.0, 55 / 6]])
    assert torch.allclose(layer.embedding, expected, atol=1e-6)
    assert layer.unused_steps.tolist() == [0, 0, 1] and int(layer.steps) == 1
    layer.eval()(grid([[5, 5]]))  # evaluation changes nothing
    assert torch.allclose(layer.embedding, expected, atol=1e-6) and int(layer.steps) == 1


def test_commitment_loss_by_hand_and_in_the_family_loss():
    z_e = grid([[1, 0], [0, 1], [9, 1]]).requires_grad_()  # codes (0,0), (0,0), (10,0)
    codes = grid([[0, 0], [0, 0], [10, 0]]).requires_grad_()
    loss = commitment_loss(z_e, codes)
    assert loss.item() == pytest.approx(4 / 6)  # squared differences 1, 0, 0, 1, 1, 1 over 6 elements
    loss.backward()
    assert codes.grad is None  # the codes get no gradient
    assert torch.allclose(z_e.grad, 2 * (z_e - codes).detach() / 6)
    model = make_vqvae(beta=0.25).train()
    terms, indices = model.terms(images(4))
    assert indices.shape == (4, 7, 7)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 0.25 * terms["commitment"].item(), rel=1e-6)


def test_dead_codes_restart_at_batch_vectors_and_used_ones_do_not():
    batch = grid([[0, 0], [10, 0], [0, 10], [50, -50]])  # exactly on codes 0-2, and one far vector (code 1's)
    waiting, restarting, control = (quantizer(CODEBOOK, restart_after=n) for n in (2, 1, 0))
    for layer in (waiting, restarting, control):
        layer(batch)
    assert control.unused_steps.tolist() == [0, 0, 0, 1] and control.embedding[3].norm() > 100  # stays put
    assert torch.equal(waiting.embedding, control.embedding)  # unused for 1 step, restart_after 2: not yet
    # unused for 1 step, restart_after 1: restarted. The far vector is the only one away from its code, so the
    # distance-weighted draw must take it
    assert restarting.embedding[3].tolist() == [50.0, -50.0] and restarting.embed_sum[3].tolist() == [50.0, -50.0]
    assert restarting.cluster_size[3] == 1 and restarting.unused_steps.tolist() == [0, 0, 0, 0]
    assert torch.equal(restarting.embedding[:3], control.embedding[:3])  # used codes follow the EMA only


def test_first_training_batch_places_every_code_at_an_encoder_output():
    layer = VectorQuantizer(2, num_codes=3, data_init=True).train()
    vectors = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    layer(grid(vectors.tolist()))  # each code placed at one vector, which alone chooses it: the EMA keeps it there
    assert bool(layer.initialized) and torch.allclose(layer.embedding.sort(0).values, vectors, atol=1e-5)
    loaded = VectorQuantizer(2, num_codes=3, data_init=True).train()
    loaded.load_state_dict(layer.state_dict())
    loaded(grid([[-9, -9]] * 4))  # a loaded codebook is not placed again: the EMA moves one code a little
    assert (loaded.embedding - layer.embedding).abs().max() < 1


def test_two_ranks_keep_one_codebook_and_restart_from_rank_zero(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # rank 0 uses codes 0 and 1 (its far vector [50, -50] is code 1's), rank 1 codes 2 and 0; code 3 is unused
    batches = torch.stack([grid([[0, 0], [10, 0], [50, -50]]), grid([[0, 10], [-50, 50], [0, 0]])])
    mp.spawn(update_on_rank, args=(port, CODEBOOK, batches, str(tmp_path / "rank")), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank.{r}", weights_only=True) for r in (0, 1)]
    for name in ("embedding", "embed_sum", "cluster_size", "unused_steps", "counts"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    whole = quantizer(CODEBOOK, restart_after=0)
    counts = whole(torch.cat(list(batches), dim=3)).counts  # one process, both batches
    assert torch.equal(ranks[0]["counts"], counts) and counts.tolist() == [2, 2, 2, 0]
    assert torch.allclose(ranks[0]["embedding"][:3], whole.embedding[:3], atol=1e-6)
    assert ranks[0]["embedding"][3].tolist() == [50.0, -50.0]  # rank 0's only vector away from its code


def test_perplexity_of_known_assignments():
    assert perplexity(torch.full((8,), 5.0)).item() == pytest.approx(8.0)
    assert perplexity(torch.tensor([0.0, 7.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([1.0, 1.0, 2.0])).item() == pytest.approx(2 * 2**0.5)  # exp(1.5 ln 2)
    usage = CodeUsage(4)
    usage.update(torch.tensor([[0, 1], [0, 1]]))
    usage.update(torch.tensor([2, 3, 2, 3]))  # the epoch's counts are uniform though no batch is
    assert usage.compute()["perplexity"].item() == pytest.approx(4.0) and usage.compute()["codes_used"] == 4
    assert codes_in_use(torch.tensor([0.0, 3.0, 1.0])).item() == 2


def test_encode_and_decode_shapes():
    model = make_vqvae().train()
    assert isinstance(model, DiscreteLatent) and isinstance(model, Reconstructs)
    assert model.code_shape == (7, 7) and model.num_codes == 16
    codebook = model.quantizer.embedding.clone()
    x = images(5)
    codes = model.encode_codes(x)
    assert codes.shape == (5, 7, 7) and codes.dtype == torch.int64 and 0 <= codes.min() and codes.max() < 16
    decoded = model.decode_codes(codes)
    assert decoded.shape == (5, 1, 28, 28) and decoded.min() >= -1 and decoded.max() <= 1
    assert torch.equal(model.decode_codes(codes.flatten(1)), decoded)  # a prior's (B, 49) sequences
    assert torch.equal(model.reconstruct(x), decoded)
    assert torch.equal(model.quantizer.embedding, codebook)  # encoding never updates the codebook
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 28, 28)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_vqvae(reconstruction="l1"), "unknown reconstruction 'l1'; use one of mse, bce"),
        (lambda: make_vqvae(conditional=True, num_classes=10), "VQVAE is unconditional"),
        (lambda: make_vqvae(beta=-1.0), "beta >= 0"),
        (lambda: VectorQuantizer(4, decay=1.0), r"decay must be in \(0, 1\)"),
        (lambda: VQEncoder((1, 30, 30), 4), "must be multiples of 2\\*\\*downsamples = 4"),
        (lambda: make_vqvae().decode_codes(torch.full((1, 7, 7), 16)), r"codes must lie in 0 \.\. 15"),
        (lambda: make_vqvae().decode_codes(torch.zeros(1, 6, 6, dtype=torch.long)), r"\(B, 7, 7\) or sequences"),
        (lambda: make_vqvae().sample(2, temperature=0.5), "give a prior"),
        (lambda: make_vqvae().sample(2, prior="nowhere.ckpt"), "checkpoint nowhere.ckpt does not exist"),
    ],
)
def test_bad_options_are_one_clear_error_line(build, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        build()
    assert "\n" not in str(info.value)
