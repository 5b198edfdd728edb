"""Character-level recurrent language model, the char-rnn baseline (Karpathy 2015,
http://karpathy.github.io/2015/05/21/rnn-effectiveness/).

``CharRNN(vocab_size, block_size)(idx)`` maps token ids (B, T) to next-token logits (B, T, vocab_size) through
an embedding, a stack of ``num_layers`` LSTM (Hochreiter & Schmidhuber 1997) or GRU (Cho et al. 2014,
https://arxiv.org/abs/1406.1078) layers with dropout between them (Zaremba et al. 2014,
https://arxiv.org/abs/1409.2329), dropout on the top layer's output and a linear head. PyTorch's default
initialisation is kept.

It has the interface of :class:`~genlit.nets.gpt.GPT`, so a language-model family can use either: the factory
call ``net(vocab_size, block_size)``, ``forward(idx, cache=None)``, ``new_cache(batch_size)``, ``context_size``
and the cache's ``length``. An RNN has no context limit: ``context_size`` is None and ``block_size`` (the training
sequence length) is only recorded. The cache, :class:`RNNState`, is the recurrent state: ``forward(idx, cache)``
starts from it, stores the new one and advances ``length``, so feeding a sequence in pieces gives the logits of
one forward over the whole. The stored state is not detached: under ``torch.no_grad()`` (sampling) that is moot;
truncated backpropagation through time would detach it between steps.

Defaults (``embed_dim=128``, ``hidden_size=512``, 2 LSTM layers): 3,457,729 parameters with the 65-character
Shakespeare vocabulary (2,603,713 for GRU), about 4x the GPT CPU recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlit.nets.gpt import check_tokens

RNNCell = Literal["lstm", "gru"]
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

Hidden = Tensor | tuple[Tensor, Tensor]  # GRU: h (L, B, H); LSTM: (h, c), each (L, B, H)


@dataclass
class RNNState:
    """Recurrent state of a :class:`CharRNN` after the ``length`` tokens fed so far.

    ``hidden`` is what ``nn.GRU`` / ``nn.LSTM`` take and return: ``h`` (num_layers, B, hidden_size) for a GRU,
    the pair ``(h, c)`` for an LSTM; zeros for a fresh state (the same as no state). ``None`` is accepted too and
    means zeros of any batch size.
    """

    hidden: Hidden | None = None
    length: int = 0

    @property
    def batch_size(self) -> int | None:
        """Number of sequences B in the state, or None while ``hidden`` is None."""
        if self.hidden is None:
            return None
        h = self.hidden[0] if isinstance(self.hidden, tuple) else self.hidden
        return h.shape[1]

    def reset(self) -> None:
        """Back to the start: zero state (same shapes) and ``length = 0``."""
        if isinstance(self.hidden, tuple):
            self.hidden = tuple(torch.zeros_like(h) for h in self.hidden)
        elif self.hidden is not None:
            self.hidden = torch.zeros_like(self.hidden)
        self.length = 0


class CharRNN(nn.Module):
    """Embedding -> ``num_layers`` LSTM/GRU layers -> dropout -> Linear head (see the module docstring).

    ``cell`` is ``"lstm"`` or ``"gru"``; ``dropout`` acts between the recurrent layers and on the top layer's
    output. ``block_size`` is accepted for the common language-model factory signature and only recorded.
    """

    context_size = None  # no context limit

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        cell: RNNCell = "lstm",
        embed_dim: int = 128,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"CharRNN cell {cell!r} is not supported; use one of {', '.join(map(repr, _CELLS))}")
        sizes = {"vocab_size": vocab_size, "block_size": block_size, "embed_dim": embed_dim}
        sizes.update(hidden_size=hidden_size, num_layers=num_layers)
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad:
            raise ValueError(f"CharRNN needs positive sizes, got {bad}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CharRNN needs 0 <= dropout < 1, got {dropout}")
        self.vocab_size, self.block_size, self.cell = vocab_size, block_size, cell
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embed = nn.Embedding(vocab_size, embed_dim)
        between = dropout if num_layers > 1 else 0.0  # torch warns about dropout with a single layer
        self.rnn = _CELLS[cell](embed_dim, hidden_size, num_layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, cache: RNNState | None = None) -> Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T).

        With a cache, start from ``cache.hidden``, then store the new state in it and add ``T`` to its length.
        """
        check_tokens("CharRNN", idx, None if cache is None else cache.batch_size)
        x = self.embed(idx)  # (B, T, E)
        out, hidden = self.rnn(x, None if cache is None else cache.hidden)  # (B, T, H)
        if cache is not None:
            cache.hidden = hidden
            cache.length += idx.shape[1]
        return self.head(self.drop(out))  # (B, T, V)

    def new_cache(self, batch_size: int) -> RNNState:
        """A fresh (zero) :class:`RNNState` for ``batch_size`` sequences, on the device/dtype of the parameters."""
        if batch_size < 1:
            raise ValueError(f"CharRNN.new_cache needs batch_size >= 1, got {batch_size}")
        weight = self.head.weight
        shape = (self.num_layers, batch_size, self.hidden_size)  # (L, B, H)
        h = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        return RNNState(hidden=(h, torch.zeros_like(h)) if self.cell == "lstm" else h)
