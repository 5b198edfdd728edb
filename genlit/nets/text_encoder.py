"""Text encoders for text-to-image diffusion: token ids -> a sequence of embeddings that the denoiser's
cross-attention reads (Rombach et al. 2022, https://arxiv.org/abs/2112.10752, section 3.3; Saharia et al. 2022,
https://arxiv.org/abs/2205.11487 for frozen T5).

Every encoder is built as ``encoder(vocab_size, max_tokens)`` (the tokenizer's vocabulary and the caption length,
from the DataModule) and called as ``encoder(ids, mask)`` with token ids (B, L) and the padding mask (B, L)
(True: a real token); it returns ``(tokens (B, L', dim), mask (B, L'))``, the embeddings and which of them are
real, and has the attribute ``dim``. Padded positions never reach a real token's embedding (the attention masks
them), and a row without any real token (the empty prompt of classifier-free guidance) still has one valid
position, so attention over it is defined.

- :class:`TextTransformer` (the default): a small pre-norm transformer encoder trained jointly with the denoiser,
  with a learned start token at position 0 (the empty prompt encodes to it alone).
- :class:`HFTextEncoder`: a frozen Hugging Face ``transformers`` encoder (CLIP's text tower or T5's encoder) by
  model id, loaded from the local cache (no download at training time; the ``transformers`` extra). Its ids
  must come from the same model's tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

_CLIP_TYPES = ("clip", "clip_text_model")
_T5_TYPES = ("t5", "mt5", "umt5")


class TextTransformer(nn.Module):
    """Token + learned position embeddings, a start token, ``depth`` pre-norm transformer layers and a final
    LayerNorm, trained with the denoiser.

    Args:
        vocab_size / max_tokens: the tokenizer's vocabulary and the longest caption (from the DataModule).
        dim: embedding width (the context width the denoiser's cross-attention reads).
        depth / num_heads / mlp_ratio / dropout: the transformer layers (``num_heads`` divides ``dim``).
    """

    def __init__(
        self,
        vocab_size: int,
        max_tokens: int,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or max_tokens < 1 or dim < 1 or depth < 0 or num_heads < 1 or dim % num_heads:
            raise ValueError(
                f"TextTransformer needs vocab_size, max_tokens, dim >= 1, depth >= 0 and num_heads dividing dim; got "
                f"{vocab_size}, {max_tokens}, {dim}, {depth} and {num_heads}"
            )
        self.vocab_size, self.max_tokens, self.dim = vocab_size, max_tokens, dim
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(max_tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (B, L + 1, dim) of ids (B, L) (any value at padded positions) and their mask (B, L + 1):
        the start token, then one embedding per token."""
        b, length = ids.shape
        if length > self.max_tokens:
            raise ValueError(f"TextTransformer reads at most {self.max_tokens} tokens, got {length}")
        tokens = self.token_embed(ids.clamp(0, self.vocab_size - 1))  # (B, L, D)
        h = torch.cat([self.start.expand(b, 1, self.dim), tokens], dim=1) + self.pos_embed[: length + 1]  # (B, L+1, D)
        full = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).bool()  # (B, L + 1)
        if self.layers is not None:
            h = self.layers(h, src_key_padding_mask=~full)  # (B, L + 1, D)
        return self.norm(h), full


def _hf_model(config: Any) -> nn.Module:
    """The ``transformers`` encoder of ``config``: CLIP's text tower or T5's encoder; one clear error otherwise."""
    kind = getattr(config, "model_type", None)
    if kind in _CLIP_TYPES:
        from transformers import CLIPTextModel

        return CLIPTextModel(getattr(config, "text_config", config))
    if kind in _T5_TYPES:
        from transformers import T5EncoderModel

        return T5EncoderModel(config)
    raise ValueError(f"text encoder model type {kind!r} is not supported; use a CLIP or T5 model id (or config)")


def _load_hf(model_id: str) -> nn.Module:
    """The pretrained encoder ``model_id`` from the local Hugging Face cache (or a local folder)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ValueError("HFTextEncoder needs the `transformers` package: pip install transformers") from None
    try:
        config = AutoConfig.from_pretrained(model_id)
        model = type(_hf_model(config)).from_pretrained(model_id)
    except OSError as err:
        raise ValueError(
            f"cannot load the text encoder {model_id!r} ({str(err).splitlines()[0]}); download it into the Hugging "
            "Face cache first or give a local folder"
        ) from None
    return model


class HFTextEncoder(nn.Module):
    """A frozen Hugging Face text encoder (CLIP text model or T5 encoder), always in eval mode.

    Args:
        vocab_size / max_tokens: from the DataModule; ``vocab_size`` must be the model's (its tokenizer's ids).
        model_id: a Hub id in the local cache, or a local folder (e.g. ``openai/clip-vit-base-patch32``,
            ``google-t5/t5-small``).
        config: a ``transformers`` config object instead of ``model_id``: a randomly initialised model (tests).
    """

    def __init__(self, vocab_size: int, max_tokens: int, model_id: str | None = None, config: Any = None) -> None:
        super().__init__()
        if (model_id is None) == (config is None):
            raise ValueError("HFTextEncoder needs exactly one of model_id and config")
        self.model = _load_hf(model_id) if model_id is not None else _hf_model(config)
        self.model.requires_grad_(False)
        self.model.eval()
        cfg = getattr(self.model.config, "text_config", self.model.config)
        self.dim = int(getattr(cfg, "hidden_size", None) or cfg.d_model)
        if vocab_size != cfg.vocab_size:
            raise ValueError(
                f"the text encoder has a vocabulary of {cfg.vocab_size} tokens, the data's tokenizer {vocab_size}; "
                "tokenize the captions with the encoder's own tokenizer"
            )
        self.max_tokens = max_tokens

    def train(self, mode: bool = True) -> HFTextEncoder:
        """The encoder is frozen: it stays in eval mode (no dropout) whatever the trainer asks."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The model's last hidden states (B, L, dim) and the mask (B, L); a row with no real token (the empty
        prompt) gives one zero embedding at position 0, marked valid."""
        mask = mask.bool()
        empty = ~mask.any(dim=1)  # (B,)
        valid = mask.clone()
        valid[:, 0] |= empty
        with torch.no_grad():
            out = self.model(input_ids=ids.clamp(min=0), attention_mask=valid.long()).last_hidden_state  # (B, L, D)
        return out.masked_fill(empty[:, None, None], 0.0), valid


class TextConditioned(nn.Module):
    """A denoiser conditioned on text: ``net(x, t, ids)`` encodes token ids (B, L) (negative ids: padding, so
    the padding mask is ``ids >= 0`` and the empty prompt is all padding) with ``encoder`` and gives the
    embeddings and their mask to ``backbone`` (a UNet or DiT built with ``context_dim = encoder.dim``) as its
    cross-attention context. Packed ids are one tensor, so guidance and prompt dropout treat them as labels."""

    def __init__(self, encoder: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.encoder, self.backbone = encoder, backbone

    def forward(self, x: Tensor, t: Tensor, ids: Tensor | None = None) -> Tensor:
        """The backbone's output (B, ...) for ``x`` (B, ...), noise levels ``t`` (B,) and packed ids (B, L)."""
        if ids is None or ids.dim() != 2 or ids.shape[0] != x.shape[0]:
            got = None if ids is None else tuple(ids.shape)
            raise ValueError(f"a text-conditional net needs token ids of shape ({x.shape[0]}, L), got {got}")
        mask = ids >= 0  # (B, L)
        context, context_mask = self.encoder(ids.clamp(min=0), mask)  # (B, L', D), (B, L')
        return self.backbone(x, t, None, context, context_mask)
