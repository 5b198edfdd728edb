"""Decoder-only transformer language model (GPT-2, Radford et al. 2019,
https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf)
with a key/value cache for incremental decoding.

``GPT(vocab_size, block_size)(idx)`` maps token ids ``idx`` (B, T), ``T <= block_size``, to next-token logits
(B, T, vocab_size): the logits at position ``t`` depend only on the tokens ``0 .. t``. The architecture is that
of GPT-2 as nanoGPT writes it: token embedding + learned absolute position embedding, embedding dropout,
``n_layer`` pre-LayerNorm blocks (causal multi-head self-attention, then a 4x wide GELU MLP, each a residual
branch ending in dropout), a final LayerNorm and a linear head that shares its weight with the token embedding
(Press & Wolf 2017, https://arxiv.org/abs/1608.05859). ``bias=False`` drops the biases of every Linear and
LayerNorm (slightly faster, no worse). Attention goes through ``F.scaled_dot_product_attention`` (the fused
kernels of FlashAttention, Dao et al. 2022, https://arxiv.org/abs/2205.14135, where the device has them).

CPU recipe (nanoGPT's ``shakespeare_char`` CPU settings): ``n_layer=4, n_head=4, n_embd=128, block_size=64``
(the defaults plus ``block_size=64``), ``bias=False``. With the 65-character Shakespeare vocabulary that is
804,096 parameters: 795,904 counted by :meth:`GPT.num_parameters` (which leaves out the 8,192 position
embeddings, as nanoGPT does), 787,456 of them in the blocks; :meth:`GPT.flops_per_token` is 5.17 MFLOP.

KV cache. :meth:`GPT.new_cache` makes a :class:`KVCache` holding, per layer, the keys and values of the tokens
fed so far. ``forward(idx, cache)`` treats ``idx`` (B, T) as the continuation of those tokens: they take the
positions ``cache.length .. cache.length + T - 1``, attend to every cached token and causally among themselves,
their keys and values are written into the cache in place, and ``cache.length`` grows by ``T``. So a prompt can
be prefilled in one call (or several chunks) and then extended one token at a time, and the logits equal those
of one forward over the whole sequence. The cache never slides: when ``cache.length + T > block_size`` forward
raises, and a sampler that wants to go on must ``reset()`` the cache and refill it with the last tokens. The cache
is meant for sampling (under ``torch.no_grad()``); it does not support backpropagating through several calls.

Modern options (each off by default, each one YAML switch; what the modded-nanogpt speedrun uses, Jordan et al.
2024, https://github.com/KellerJordan/modded-nanogpt): ``position="rotary"`` replaces the learned position
embedding by rotary embeddings on the queries and keys (RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864), so
attention scores depend on relative positions only; ``norm="rmsnorm"`` (Zhang & Sennrich 2019,
https://arxiv.org/abs/1910.07467); ``qk_norm=True`` RMS-normalizes each head's queries and keys before the dot
product (Henry et al. 2020, https://arxiv.org/abs/2010.04245), which keeps the logits of attention bounded at high
learning rates; ``mlp="relu2"``, the squared ReLU (So et al. 2021, https://arxiv.org/abs/2109.08668);
``tie_weights=False``, a separate output head; ``logit_softcap=c``, logits ``c * tanh(logits / c)`` (Gemma 2).

``causal=False`` makes the same stack a bidirectional encoder (BERT, Devlin et al. 2019): every token attends to
every other, and there is no cache. The masked language model family uses it: one home for the block.

Activation checkpointing (Chen et al. 2016, https://arxiv.org/abs/1604.06174): with
``activation_checkpointing=True`` each block recomputes its activations in the backward pass instead of storing
them (training mode only, never with a cache). The non-reentrant checkpoint restores the RNG state before
recomputing, so dropout masks and hence losses and gradients are the same as without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def check_tokens(owner: str, idx: Tensor, batch_size: int | None = None) -> None:
    """Raise a ValueError unless ``idx`` is an integer tensor (B, T) with ``T >= 1`` (and ``B == batch_size``).

    ``batch_size`` is the batch size of a cache that ``idx`` continues; ``None`` skips that check.
    """
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"{owner} expects token ids of shape (B, T) with T >= 1, got {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"{owner} expects integer token ids, got dtype {idx.dtype}")
    if batch_size is not None and idx.shape[0] != batch_size:
        raise ValueError(
            f"{owner}: the cache holds {batch_size} sequences but idx has {idx.shape[0]}; "
            f"make a cache with new_cache({idx.shape[0]})"
        )


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, one pair of buffers per layer, for incremental decoding.

    ``keys[l]`` and ``values[l]`` are preallocated tensors (B, n_head, block_size, head_dim) on the device and in
    the dtype of the model's parameters; slots ``0 .. length - 1`` hold the entries of the tokens fed so far and
    the rest is scratch that is never read. :meth:`GPT.forward` writes the new entries in place and advances
    ``length``. Make one with :meth:`GPT.new_cache`; one cache serves one batch of sequences of equal length.
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0

    @property
    def batch_size(self) -> int:
        """Number of sequences B the cache holds."""
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        """Most tokens the cache can hold (the model's ``block_size``)."""
        return self.keys[0].shape[2]

    def reset(self) -> None:
        """Forget the cached tokens (``length = 0``); the buffers are kept and overwritten by the next forward."""
        self.length = 0


def _cached_attention_mask(start: int, t: int, device: torch.device) -> tuple[Tensor | None, bool]:
    """``(attn_mask, is_causal)`` for ``t`` new queries after ``start`` cached tokens, for SDPA.

    No cached tokens: the plain causal mask (``is_causal=True``). One new token: it sees everything (no mask).
    Otherwise a boolean (T, start + T) mask, True where new token ``i`` may attend: every cached token and the
    new tokens ``<= i``, i.e. the columns ``j <= start + i``.
    """
    if start == 0:
        return None, True
    if t == 1:
        return None, False
    mask = torch.ones(t, start + t, dtype=torch.bool, device=device).tril(diagonal=start)  # (T, start + T)
    return mask, False


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``(cos, sin)``, each (length, head_dim // 2), of the rotary angles ``position * base^(-2i / head_dim)``."""
    if head_dim % 2:
        raise ValueError(f"rotary position embeddings need an even head width, got {head_dim}; change n_embd/n_head")
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs  # (length, hd/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair ``(x_i, x_{i + hd/2})`` of ``x`` (B, nh, T, hd) by the angles of its position:
    ``cos``/``sin`` (T, hd/2) hold the rows of the positions of ``x``'s T tokens. A query at position m and a key
    at n then score ``q R(m)^T R(n) k = q R(n - m) k``: a function of ``n - m`` only."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hd/2) each
    rotated = torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)  # (B, nh, T, hd)
    return rotated.type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection and an output projection; causal unless
    ``causal=False`` (an encoder).

    ``forward(x, kv, start, rotary)``: with ``kv = (key_buffer, value_buffer)`` the new keys and values are written
    at slots ``start .. start + T - 1`` of the buffers (B, n_head, block_size, head_dim) and the queries attend to
    slots ``0 .. start + T - 1``. ``rotary = (cos, sin)`` (T, hd/2) rotates the queries and keys of the T tokens
    (keys are cached rotated). ``qk_norm`` RMS-normalizes queries and keys per head (no gain: the scale is free).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, causal: bool = True,
                 qk_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.causal, self.qk_norm = causal, qk_norm
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int = 0,
                rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
        """Attend over ``x`` (B, T, C) (and the cached entries before ``start``); returns (B, T, C)."""
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head)  # (B, T, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hd) each
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        mask, causal = None, self.causal
        if kv is not None:
            k_buf, v_buf = kv
            end = start + t
            k_buf[:, :, start:end] = k  # (B, nh, T, hd) written into (B, nh, block_size, hd)
            v_buf[:, :, start:end] = v
            k, v = k_buf[:, :, :end].to(q.dtype), v_buf[:, :, :end].to(q.dtype)  # (B, nh, start + T, hd) each
            mask, causal = _cached_attention_mask(start, t, x.device)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return self.resid_dropout(self.out_proj(y))  # (B, T, C)


class ReLUSquared(nn.Module):
    """``relu(x) ** 2`` (So et al. 2021, Primer)."""

    def forward(self, x: Tensor) -> Tensor:
        """Elementwise squared ReLU."""
        return F.relu(x).square()


MLPKind = Literal["gelu", "relu2"]
NormKind = Literal["layernorm", "rmsnorm"]
PositionKind = Literal["learned", "rotary"]
_ACTIVATIONS = {"gelu": nn.GELU, "relu2": ReLUSquared}


def _norm(kind: NormKind, n_embd: int, bias: bool) -> nn.Module:
    """A LayerNorm (with a bias unless ``bias=False``) or an RMSNorm over the last ``n_embd`` features."""
    return nn.LayerNorm(n_embd, bias=bias) if kind == "layernorm" else nn.RMSNorm(n_embd)


class MLP(nn.Module):
    """Position-wise feed-forward branch: Linear(C, 4C) -> GELU (or squared ReLU) -> Linear(4C, C) -> dropout."""

    def __init__(self, n_embd: int, dropout: float, bias: bool, activation: MLPKind = "gelu"):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.act = _ACTIVATIONS[activation]()
        self.fc_out = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, T, C) to (B, T, C)."""
        return self.dropout(self.fc_out(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (GPT-2, section 2.3)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, *, causal: bool = True,
                 norm: NormKind = "layernorm", qk_norm: bool = False, mlp: MLPKind = "gelu") -> None:  # fmt: skip
        super().__init__()
        self.ln1 = _norm(norm, n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, causal=causal, qk_norm=qk_norm)
        self.ln2 = _norm(norm, n_embd, bias)
        self.mlp = MLP(n_embd, dropout, bias, mlp)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int = 0,
                rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
        """Map ``x`` (B, T, C) to (B, T, C); ``kv``, ``start`` and ``rotary`` as in :class:`CausalSelfAttention`."""
        x = x + self.attn(self.ln1(x), kv, start, rotary)  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


def _check_choice(name: str, value: str, kind) -> None:
    """One clear error for a string option outside its ``Literal`` choices."""
    if value not in get_args(kind):
        raise ValueError(f"GPT {name} {value!r} is not known; use one of {', '.join(get_args(kind))}")


def _check_gpt_args(vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float):
    """Raise one clear ValueError for the first bad size or dropout of :class:`GPT`."""
    sizes = {"vocab_size": vocab_size, "block_size": block_size, "n_layer": n_layer, "n_head": n_head}
    sizes["n_embd"] = n_embd
    bad = {name: value for name, value in sizes.items() if value < 1}
    if bad:
        raise ValueError(f"GPT needs positive sizes, got {bad}")
    if n_embd % n_head:
        raise ValueError(f"GPT needs n_embd divisible by n_head (the head width), got n_embd={n_embd}, n_head={n_head}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"GPT needs 0 <= dropout < 1, got {dropout}")


class GPT(nn.Module):
    """GPT-2 style decoder-only transformer language model (see the module docstring).

    ``forward(idx, cache=None)``: token ids (B, T) -> logits (B, T, vocab_size). ``context_size`` (equal to
    ``block_size``) is the longest sequence it accepts. Initialisation follows GPT-2: normal(0, 0.02) for the
    Linear and Embedding weights, zero biases, and normal(0, 0.02 / sqrt(2 * n_layer)) for the two residual
    output projections of each block, so that the residual stream's variance does not grow with depth
    (Radford et al. 2019, section 2.3). An untied head starts at zero (as the speedrun's): the first logits are
    uniform and the head learns from the first step what the embedding cannot tell it.

    Args:
        vocab_size / block_size: token ids ``0 .. vocab_size - 1``; the longest context.
        n_layer / n_head / n_embd: depth, heads per layer, width.
        dropout: on the embeddings, the attention weights and each residual branch.
        bias: biases in every Linear and LayerNorm.
        activation_checkpointing: recompute each block's activations in the backward pass.
        causal: False makes a bidirectional encoder (no cache).
        position: ``learned`` absolute position embeddings (GPT-2) or ``rotary`` (RoPE on queries and keys).
        norm: ``layernorm`` or ``rmsnorm`` (the blocks' and the final norm).
        qk_norm: RMS-normalize queries and keys per head.
        mlp: ``gelu`` or ``relu2`` (squared ReLU).
        tie_weights: the output head shares the token embedding's weight (GPT-2); False: its own.
        logit_softcap: ``c`` caps the logits smoothly at ``+-c`` (``c * tanh(logits / c)``); None: no cap.
        rope_base: the base of the rotary frequencies.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        activation_checkpointing: bool = False,
        causal: bool = True,
        position: PositionKind = "learned",
        norm: NormKind = "layernorm",
        qk_norm: bool = False,
        mlp: MLPKind = "gelu",
        tie_weights: bool = True,
        logit_softcap: float | None = None,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        _check_gpt_args(vocab_size, block_size, n_layer, n_head, n_embd, dropout)
        choices = (("position", position, PositionKind), ("norm", norm, NormKind), ("mlp", mlp, MLPKind))
        for name, value, kind in choices:
            _check_choice(name, value, kind)
        if logit_softcap is not None and logit_softcap <= 0:
            raise ValueError(f"GPT logit_softcap must be positive (or null for none), got {logit_softcap}")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.context_size: int = block_size
        self.activation_checkpointing = activation_checkpointing
        self.causal, self.logit_softcap, self.tie_weights = causal, logit_softcap, tie_weights
        self.wte = nn.Embedding(vocab_size, n_embd)
        if position == "learned":
            self.wpe = nn.Embedding(block_size, n_embd)
        else:
            cos, sin = rotary_tables(block_size, n_embd // n_head, rope_base)  # (block_size, hd/2) each
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        block_options = {"causal": causal, "norm": norm, "qk_norm": qk_norm, "mlp": mlp}
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, **block_options) for _ in range(n_layer))
        self.ln_f = _norm(norm, n_embd, bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.wte.weight  # tied: one Parameter (Press & Wolf 2017)
        self._init_weights()

    @property
    def position(self) -> PositionKind:
        """``learned`` or ``rotary``."""
        return "learned" if hasattr(self, "wpe") else "rotary"

    def _init_weights(self) -> None:
        """GPT-2 initialisation (see the class docstring)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.fc_out.weight, mean=0.0, std=residual_std)
        if not self.tie_weights:
            nn.init.zeros_(self.lm_head.weight)

    def _start_position(self, t: int, cache: KVCache | None) -> int:
        """Position of the first new token (``cache.length`` or 0), after checking that ``t`` tokens fit."""
        if cache is None:
            if t > self.block_size:
                raise ValueError(f"GPT: sequence length {t} exceeds block_size {self.block_size}; crop the context")
            return 0
        if cache.length + t > self.block_size:
            raise ValueError(
                f"GPT: the cache holds {cache.length} tokens and idx adds {t}: {cache.length + t} > block_size "
                f"{self.block_size}; reset() the cache and refill it with at most {self.block_size} tokens"
            )
        return cache.length

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T), in the dtype of the computation.

        Without a cache ``T <= block_size``. With a cache, ``idx`` continues the tokens already in it: positions
        ``cache.length .. cache.length + T - 1``; the new keys and values are appended in place and
        ``cache.length`` grows by ``T``; ``cache.length + T <= block_size``. Either limit broken is a ValueError.
        """
        check_tokens("GPT", idx, None if cache is None else cache.batch_size)
        if cache is not None and not self.causal:
            raise ValueError("GPT(causal=False) is a bidirectional encoder without a cache; call it on whole sequences")
        t = idx.shape[1]
        start = self._start_position(t, cache)
        x = self.wte(idx)  # (B, T, C)
        rotary = None
        if hasattr(self, "wpe"):
            x = x + self.wpe(torch.arange(start, start + t, device=idx.device))  # (B, T, C)
        else:
            rotary = (self.rotary_cos[start : start + t], self.rotary_sin[start : start + t])  # (T, hd/2) each
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, (cache.keys[i], cache.values[i]), start, rotary)  # (B, T, C)
            elif self.activation_checkpointing and self.training:
                x = checkpoint(block, x, None, 0, rotary, use_reentrant=False)  # (B, T, C), recomputed in backward
            else:
                x = block(x, None, 0, rotary)  # (B, T, C)
        if cache is not None:
            cache.length = start + t
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.logit_softcap is not None:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences, on the device and dtype of the parameters."""
        if batch_size < 1:
            raise ValueError(f"GPT.new_cache needs batch_size >= 1, got {batch_size}")
        if not self.causal:
            raise ValueError("GPT(causal=False) is a bidirectional encoder: it has no cache to make")
        weight = self.wte.weight
        shape = (batch_size, self.n_head, self.block_size, self.n_embd // self.n_head)  # (B, nh, block_size, hd)
        keys = [torch.zeros(shape, device=weight.device, dtype=weight.dtype) for _ in range(self.n_layer)]
        values = [torch.zeros(shape, device=weight.device, dtype=weight.dtype) for _ in range(self.n_layer)]
        return KVCache(keys=keys, values=values)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters, the tied embedding/head counted once.

        ``non_embedding=True`` leaves out the position embeddings (as nanoGPT's ``get_num_params``); the token
        embedding stays in, because it is also the weight of the output head.
        """
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding and hasattr(self, "wpe") else n

    def flops_per_token(self) -> float:
        """Training FLOPs (forward + backward) per token: ``6 N + 12 n_layer n_embd block_size``.

        The formula of PaLM's appendix B (Chowdhery et al. 2022, https://arxiv.org/abs/2204.02311), as nanoGPT's
        ``estimate_mfu`` uses it. ``N = num_parameters(non_embedding=True)``: every weight does a multiply-add
        (2 FLOPs) per token in the forward pass and twice that in the backward pass. The second term is attention:
        per layer and token, ``q k^T`` and ``attn @ v`` each cost ``2 n_embd T`` FLOPs forward with ``T =
        block_size`` (the full context, ignoring causal masking), times 3 for forward + backward.
        """
        return float(6 * self.num_parameters() + 12 * self.n_layer * self.n_embd * self.block_size)
