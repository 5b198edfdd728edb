"""Autoregressive family: next-token language modelling with any sequence net passed in.

Training minimises the cross-entropy of each next token (nats per token). Validation and test report
``loss``, ``perplexity = exp(loss)`` and bits per unit of text: ``bits_per_char`` for a character tokenizer,
``bits_per_byte`` for byte-level BPE (the total nats over the number of UTF-8 bytes the predicted tokens
stand for, divided by ln 2), so models with different tokenizers compare on one scale.

The tokenizer comes from the DataModule at ``setup`` and is stored in the checkpoint, so
``genlit sample`` turns a prompt into text with the checkpoint alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from genlit.data.tokenizers import MASK, Tokenizer
from genlit.families.base import GenerativeFamily, NonFinitePolicy
from genlit.families.lora import TRANSFORMER_TARGETS
from genlit.families.token_sampling import check_sampling_options, sample_next
from genlit.families.tokenized import TokenizedModel
from genlit.optim import decay_groups
from genlit.seeding import SampleRNG

LMNetFactory = Callable[[int, int], nn.Module]
"""A net class taking ``(vocab_size, block_size)`` (e.g. ``genlit.nets.gpt.GPT``, ``genlit.nets.rnn.CharRNN``),
with ``forward(idx, cache=None)`` -> logits (B, T, V), ``new_cache(batch_size)`` and ``context_size``."""


class AutoregressiveLM(TokenizedModel, GenerativeFamily):
    """Next-token language model with the net passed in.

    Without a tokenizer the data are token ids themselves (e.g. a VQ-VAE's codes, from
    :class:`~genlit.data.token_sequences.TokenSequenceDataModule`), and the model is a prior over them: its last
    id, ``vocab_size - 1``, is the begin-of-sequence token (:attr:`bos_id`). Every sample starts from it and never
    emits it, and :meth:`draw` returns the generated ids (num, max_new_tokens). The id follows from ``vocab_size``,
    so a checkpoint alone samples, as a text model's stored tokenizer lets it.

    Args:
        net: factory called as ``net(vocab_size, block_size)``; YAML gives its other init_args.
        vocab_size / block_size: linked from the DataModule by the CLI (tokenizer size, training context).
        weight_decay: decoupled weight decay of weight matrices only; biases, norms and embeddings get none
            (:func:`genlit.optim.decay_groups`). It overrides the optimizer's own ``weight_decay``.
        optimizer: factory given the param groups (default AdamW; ``genlit.optim.MuonAdamW`` for Muon on the
            hidden matrices).
        lr_scheduler: factory stepped every optimizer step, e.g. ``genlit.optim.WarmupCosineLR`` (warm-up then
            cosine decay to a floor) or ``torch.optim.lr_scheduler.OneCycleLR``.
        compile: run the training and evaluation forward through ``torch.compile`` (weights and checkpoints
            are those of the plain net).
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    lora_targets = TRANSFORMER_TARGETS
    metric_panels = {
        "loss (nats per token)": ("loss",),
        "bits per character (or byte, or token)": ("bits_per_char", "bits_per_byte", "bits_per_token"),
    }

    def __init__(
        self,
        net: LMNetFactory,
        vocab_size: int = 0,
        block_size: int = 256,
        weight_decay: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, on_nonfinite=on_nonfinite)
        if vocab_size < 1 or block_size < 1:
            raise ValueError(
                f"vocab_size and block_size must be positive, got {vocab_size} and {block_size}; they come from "
                "the DataModule (genlit.data.text.TextDataModule) or must be given"
            )
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.net = net(vocab_size, block_size)
        self.tokenizer: Tokenizer | None = None
        self.val_loss, self.val_bits = MeanMetric(), MeanMetric()
        self.test_loss, self.test_bits = MeanMetric(), MeanMetric()
        # a tuple, so the (compiled) forward is not registered as a second copy of the net's weights
        self._forward = (torch.compile(self.net) if compile else self.net,)
        self._unit_lengths: Tensor | None = None

    # ----------------------------------------------------------------------------------------- tokenizer
    def configure_model(self) -> None:
        """Shard the net with FSDP2 when the trainer's strategy made a device mesh (Lightning's
        ``ModelParallelStrategy``): each transformer block is one ``fully_shard`` unit, gathered just before
        it runs, and the rest (embeddings, tied head, final norm) the root one. Nothing to do otherwise.

        The GPT uses no tensor parallelism, so the mesh's two dimensions (Lightning's ``data_parallel``, by
        default the nodes, and ``tensor_parallel``, by default each node's devices) become hybrid sharding:
        weights sharded across a node's devices and replicated across nodes. When one dimension has size 1,
        plain FSDP over the other."""
        mesh = self.device_mesh
        if mesh is None or getattr(self, "_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard

        if mesh.ndim == 2 and 1 in mesh.shape:
            mesh = mesh[mesh.mesh_dim_names[mesh.shape.index(1) ^ 1]]  # the dimension of size > 1 (or the 2nd)
        for block in getattr(self.net, "blocks", ()):
            fully_shard(block, mesh=mesh)
        fully_shard(self.net, mesh=mesh)
        self._sharded = True

    # ------------------------------------------------------------------------------------------ training
    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits (B, T, V) of token ids idx (B, T)."""
        return self._forward[0](idx)

    def token_nll(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-token negative log-likelihood in nats (B, T) of targets y (B, T) given inputs x (B, T)."""
        logits = self(x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view_as(y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Mean next-token cross-entropy of a batch (x, y) of token ids (B, T) each."""
        x, y = batch
        logits = self(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if not self.loss_is_finite(loss):
            return None
        self.log_train_step(loss=loss)
        return loss

    # --------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the validation loss and bits per unit."""
        self._evaluate(batch, self.val_loss, self.val_bits)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the test loss and bits per unit."""
        self._evaluate(batch, self.test_loss, self.test_bits)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/perplexity`` and ``val/bits_per_<unit>``."""
        self._log_evaluation("val", self.val_loss, self.val_bits)

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss``, ``test/perplexity`` and ``test/bits_per_<unit>``."""
        self._log_evaluation("test", self.test_loss, self.test_bits)

    def _evaluate(self, batch: tuple[Tensor, Tensor], loss: MeanMetric, bits: MeanMetric) -> None:
        x, y = batch
        nll = self.token_nll(x, y)  # (B, T)
        units = self.units_of(y)  # (B, T)
        loss.update(nll.mean(), weight=nll.numel())
        total_units = units.sum()
        bits.update(nll.sum() / math.log(2) / total_units, weight=total_units)

    def _log_evaluation(self, stage: str, loss: MeanMetric, bits: MeanMetric) -> None:
        if loss.update_count == 0:
            return
        mean = loss.compute()
        self.log(f"{stage}/loss", mean, prog_bar=stage == "val")
        self.log(f"{stage}/perplexity", mean.exp())
        self.log(f"{stage}/bits_per_{self.unit}", bits.compute(), prog_bar=stage == "val")
        loss.reset()
        bits.reset()

    # ---------------------------------------------------------------------------------------- generation
    @property
    def bos_id(self) -> int | None:
        """The begin-of-sequence id of a model without a tokenizer: its last id, ``vocab_size - 1``, where
        :class:`~genlit.data.token_sequences.TokenSequenceDataModule` puts it (after the codes); None for a text
        model, which continues a prompt instead. It follows from ``vocab_size``, so every checkpoint knows it."""
        return None if self.tokenizer is not None else self.hparams.vocab_size - 1

    def new_tokens(self, max_new_tokens: int | None = None) -> int:
        """``max_new_tokens``, or by default 500 for text and ``block_size`` (one training sequence) for token ids."""
        if max_new_tokens is not None:
            return max_new_tokens
        return 500 if self.tokenizer is not None else self.hparams.block_size

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | SampleRNG | None = None,
        on_tokens: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """Continue token ids ``prompt`` (B, T0) by ``max_new_tokens`` sampled tokens: (B, T0 + max_new_tokens).

        Row b draws its tokens from its own stream when ``generator`` is a :class:`~genlit.seeding.SampleRNG`
        (as for :meth:`~genlit.families.base.GenerativeFamily.sample`). Uses the net's cache (keys and values of
        a transformer, the hidden state of an RNN), so each new token costs one position. A transformer
        conditions on at most its last ``context_size`` tokens, as a full recomputation over the cropped
        sequence would: once the context is full, each step re-reads it. ``on_tokens`` is called with each new
        column of tokens (B,), for streaming. A model without a tokenizer never emits its :attr:`bos_id`. Runs
        in eval mode.
        """
        check_sampling_options(temperature, top_k, top_p)
        rng = SampleRNG.for_call(len(prompt), generator, self.device)
        with self.eval_mode():
            return self._generate(prompt.to(self.device), max_new_tokens, temperature, top_k, top_p, rng, on_tokens)

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, rng, on_tokens) -> Tensor:
        context = getattr(self.net, "context_size", None)
        seq = prompt if context is None else prompt[:, -context:]  # (B, T0')
        cache = self.net.new_cache(seq.size(0))
        logits = self.net(seq, cache)[:, -1]  # (B, V)
        banned = self.bos_id  # BOS only starts a sequence: a sample that emitted it would leave the data
        new = []
        for _ in range(max_new_tokens):
            if banned is not None:
                logits = logits.index_fill(-1, torch.tensor([banned], device=logits.device), float("-inf"))
            uniform = rng.rand() if temperature > 0 else None  # (B,)
            token = sample_next(logits, temperature, top_k, top_p, uniform=uniform)  # (B,)
            new.append(token)
            if on_tokens is not None:
                on_tokens(token)
            if context is not None and cache.length >= context:  # full: re-read the last `context` tokens
                cache.reset()
                window = torch.cat([seq, torch.stack(new, 1)], 1)[:, -context:]  # (B, context)
                logits = self.net(window, cache)[:, -1]
            else:
                logits = self.net(token[:, None], cache)[:, -1]  # (B, V)
        return torch.cat([prompt, *[t[:, None] for t in new]], 1)

    def encode_prompt(self, prompt: str | None = None) -> Tensor:
        """Token ids (1, T) of a text prompt, by default a newline (a clear error for text the tokenizer cannot
        encode, and for a model without a tokenizer, whose samples start from its BOS token)."""
        if self.tokenizer is None:
            raise ValueError(
                "this model has no tokenizer: it models token ids, and its samples start from its begin-of-sequence "
                f"token (id {self.bos_id}); drop the prompt, or train a text model with a genlit TextDataModule"
            )
        if prompt is not None and MASK in prompt:
            raise ValueError(
                f"a GPT continues text and does not fill {MASK} tokens; remove {MASK} from the prompt, or fill it "
                "with a masked language model (genlit.families.masked_lm.MaskedLM, experiments/masked_lm/)"
            )
        ids = self.tokenizer.encode("\n" if prompt is None else prompt)
        if not ids:
            raise ValueError("the prompt is empty; give at least one character (e.g. a newline)")
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        prompt: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[str] | Tensor:
        """``num`` texts continuing ``prompt`` (the prompt included), each from its own stream of ``rng``; for a
        model without a tokenizer, ``num`` sequences of token ids, int64 (num, max_new_tokens), generated after
        its BOS token (BOS itself not included).

        Args:
            prompt: the text continued (it must encode with the model's tokenizer); default a newline. A model
                without a tokenizer takes none.
            max_new_tokens: tokens generated per sample; default 500 for text, the training sequence length
                (``block_size``) for token ids.
            temperature: 0 is greedy.
            top_k: sample among the k most likely tokens.
            top_p: nucleus sampling: among the smallest set of tokens of probability mass p.
        """
        max_new = self.new_tokens(max_new_tokens)
        if self.tokenizer is None:
            bos = torch.full((num, 1), self.bos_id, dtype=torch.long, device=self.device)  # (num, 1)
            return self._generate(bos, max_new, temperature, top_k, top_p, rng, None)[:, 1:]  # (num, max_new)
        ids = self.encode_prompt(prompt).expand(num, -1)  # (num, T0)
        out = self._generate(ids, max_new, temperature, top_k, top_p, rng, None)  # (num, T0 + new)
        return [self.tokenizer.decode(row.tolist()) for row in out]

    def validate_sample_options(
        self, prompt=None, max_new_tokens=None, temperature=1.0, top_k=None, top_p=None, **_
    ) -> None:
        """A prompt the tokenizer encodes (none without a tokenizer), a positive token count, and the
        temperature, top-k and top-p ranges."""
        if prompt is not None:
            self.encode_prompt(prompt)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        check_sampling_options(temperature, top_k, top_p)

    # -------------------------------------------------------------------------------------- optimization
    def optimized_parameters(self) -> list[dict]:
        """Weight matrices with ``weight_decay``, everything else without; the hidden matrices (those of a
        transformer's blocks) in a group of their own tagged ``use_muon``, for :class:`genlit.optim.MuonAdamW`."""
        return decay_groups(self.net, self.hparams.weight_decay, getattr(self.net, "blocks", None))
