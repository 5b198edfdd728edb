"""CharRNN: shapes, the language-model interface, cache continuation against a full forward, errors."""

from __future__ import annotations

import pytest
import torch

from genlit.nets.rnn import CharRNN, RNNState

VOCAB, BLOCK = 13, 32
TINY = {"embed_dim": 8, "hidden_size": 16, "num_layers": 2}


def _tiny(cell: str, **kwargs) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(VOCAB, BLOCK, cell, **{**TINY, **kwargs}).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_shapes_and_interface(cell):
    net = _tiny(cell, dropout=0.1)
    assert net.context_size is None and net.block_size == BLOCK
    logits = net(torch.randint(0, VOCAB, (3, 2 * BLOCK)))  # longer than block_size: no limit
    assert logits.shape == (3, 2 * BLOCK, VOCAB)
    cache = net.new_cache(3)
    assert cache.length == 0 and cache.batch_size == 3


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("chunks", [[1] * 10, [4, 1, 5], [10]], ids=["tokens", "mixed", "one"])
def test_cache_continuation_matches_full_forward(cell, chunks):
    net = _tiny(cell)
    idx = torch.randint(0, VOCAB, (2, sum(chunks)))
    cache, outs, pos = net.new_cache(2), [], 0
    with torch.no_grad():
        full = net(idx)
        for n in chunks:
            outs.append(net(idx[:, pos : pos + n], cache))
            pos += n
            assert cache.length == pos
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reset_and_empty_state(cell):
    net = _tiny(cell)
    idx = torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        cache = net.new_cache(2)
        first = net(idx, cache)
        cache.reset()
        assert cache.length == 0
        torch.testing.assert_close(net(idx, cache), first)
        empty = RNNState()  # hidden None: the same as zeros
        torch.testing.assert_close(net(idx, empty), first)
    assert empty.length == 5 and empty.batch_size == 2


def test_errors():
    with pytest.raises(ValueError, match="'lstm', 'gru'"):
        CharRNN(VOCAB, BLOCK, "rnn")
    with pytest.raises(ValueError, match="positive sizes.*hidden_size"):
        CharRNN(VOCAB, BLOCK, hidden_size=0)
    with pytest.raises(ValueError, match="0 <= dropout < 1"):
        CharRNN(VOCAB, BLOCK, dropout=1.0)
    net = _tiny("gru")
    with pytest.raises(ValueError, match="cache holds 2 sequences but idx has 1"):
        net(torch.zeros(1, 3, dtype=torch.long), net.new_cache(2))
