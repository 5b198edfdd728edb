"""Drawing the next token from a language model's logits: temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import torch
from torch import Tensor


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """One clear error for a temperature, top-k or top-p out of range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or unset), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or unset), got {top_p}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Logits (B, V) with every token outside the top-k set and outside the nucleus set to -inf.

    Top-k keeps the k most likely tokens (Fan et al. 2018, https://arxiv.org/abs/1805.04833). Top-p keeps the
    smallest set of most likely tokens whose probability reaches p (Holtzman et al. 2020,
    https://arxiv.org/abs/1904.09751); the most likely token always stays. Both together keep the intersection.
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
        probs = torch.softmax(sorted_logits, dim=-1)  # (B, V)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V): probability of the tokens ranked above
        drop_sorted = mass_before >= top_p  # (B, V); the first token has mass_before 0 and always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V) in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    uniform: Tensor | None = None,
) -> Tensor:
    """Next tokens (B,) int64 from last-position logits (B, V); temperature 0 is greedy (argmax).

    Row b's token is the inverse of its cumulative distribution at ``uniform[b]`` (B,) in [0, 1), drawn from
    ``generator`` when not given: one uniform per row, so each row can come from its own random stream.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)  # (B, V)
    if uniform is None:
        uniform = torch.rand(len(probs), generator=generator, device=probs.device)  # (B,)
    cdf = probs.cumsum(-1)  # (B, V)
    # the first token whose cumulative mass exceeds u * total: tokens of zero mass are never chosen
    target = uniform.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]  # (B, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.size(-1) - 1)  # (B,)
