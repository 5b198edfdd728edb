"""What the language-model families share about their tokenizer: it comes from the DataModule at ``setup``, is
checked against the model's vocabulary, travels in the checkpoint (so sampling needs no dataset), and says how many
characters or bytes each token stands for (so bits per character or byte are exact whatever the tokenizer); and the
forward both sample with, as an ONNX graph (token ids -> logits)."""

from __future__ import annotations

import torch
from torch import Tensor

from genlit.data.tokenizers import CHECKPOINT_KEY as TOKENIZER_KEY
from genlit.data.tokenizers import Tokenizer, read_tokenizer, tokenizer_from_json
from genlit.families.protocols import OnnxGraph, OnnxInput


class StoresTokenizer:
    """Mixin (before the family base in the class list) keeping ``self.tokenizer`` in the checkpoint, so sampling
    needs no dataset; ``read_tokenizer_json`` turns the stored JSON back into a tokenizer, given to
    ``set_tokenizer``."""

    read_tokenizer_json = staticmethod(tokenizer_from_json)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the tokenizer, so sampling needs no dataset (and what every family stores)."""
        super().on_save_checkpoint(checkpoint)
        if self.tokenizer is not None:
            checkpoint[TOKENIZER_KEY] = self.tokenizer.to_json()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the tokenizer stored by :meth:`on_save_checkpoint` (and what every family restores)."""
        super().on_load_checkpoint(checkpoint)
        if TOKENIZER_KEY in checkpoint:
            self.set_tokenizer(self.read_tokenizer_json(checkpoint[TOKENIZER_KEY]))


class TokenizedModel(StoresTokenizer):
    """Mixin for a LightningModule with ``hparams.vocab_size`` and ``hparams.block_size`` and a ``net`` mapping token
    ids (B, T) to logits (B, T, vocab_size), placed before its family base in the class list.

    Subclasses set ``self.tokenizer = None`` and ``self._unit_lengths = None`` in ``__init__`` and may extend
    :meth:`check_tokenizer` with their own requirements (the masked LM's ``[MASK]``).
    """

    tokenizer: Tokenizer | None
    _unit_lengths: Tensor | None

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """One clear error when ``tokenizer`` does not fit the model (its size is not the model's vocabulary)."""
        if tokenizer.vocab_size != self.hparams.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model was built for "
                f"{self.hparams.vocab_size}; use the DataModule (and tokenizer settings) the model was trained with"
            )

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Attach the tokenizer that maps text to this model's token ids (checked by :meth:`check_tokenizer`)."""
        self.check_tokenizer(tokenizer)
        self.tokenizer, self._unit_lengths = tokenizer, None

    def setup(self, stage: str) -> None:
        """Take the tokenizer of the trainer's DataModule, if it has one."""
        super().setup(stage)
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
            if stage == "fit":
                self._check_init_from_tokenizer(tokenizer)

    def _check_init_from_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Fine-tuning from a language model needs its token ids: the data must use the tokenizer ``init_from``
        stored, else one clear line (the weights would otherwise load against other ids, silently when the sizes
        happen to agree)."""
        source = self.transfer_options.init_from
        if not source:
            return
        try:
            stored = read_tokenizer(source, "init_from")
        except ValueError:
            return  # init_from stores no tokenizer (not a language model): its own checks speak
        if stored.to_json() != tokenizer.to_json():
            raise ValueError(
                f"init_from {source} was trained with another tokenizer than this data's; fine-tune on its token ids "
                f"with --data.tokenizer_from {source}"
            )

    def onnx_graph(self) -> OnnxGraph:
        """The net's forward: ``tokens`` (B, T) int64 ids -> ``logits`` (B, T, vocab_size), any batch size and any
        ``T <= block_size`` (the sampling loop, its cache and the tokenizer stay outside)."""
        vocab, block = self.hparams.vocab_size, self.hparams.block_size
        token_ids = OnnxInput("tokens", ("batch", "sequence"), torch.long, vocab)
        return OnnxGraph(self.net, (token_ids,), "logits", "the token logits: (tokens) -> logits", block)

    @property
    def unit(self) -> str:
        """What bits are counted per: ``char``, ``byte`` (the tokenizer's unit) or ``token`` (no tokenizer)."""
        return self.tokenizer.unit if self.tokenizer is not None else "token"

    def units_of(self, tokens: Tensor) -> Tensor:
        """How many units of text (chars or bytes; 1 without a tokenizer) each token stands for (B, T)."""
        if self.tokenizer is None:
            return torch.ones_like(tokens, dtype=torch.float32)
        if self._unit_lengths is None or self._unit_lengths.device != tokens.device:
            lengths = torch.tensor(self.tokenizer.unit_lengths(), dtype=torch.float32)
            self._unit_lengths = lengths.to(tokens.device)
        return self._unit_lengths[tokens]  # (B, T)
