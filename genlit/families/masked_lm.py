"""Masked language model (BERT, Devlin et al. 2019, https://arxiv.org/abs/1810.04805): a bidirectional
transformer trained to recover corrupted tokens, evaluated by pseudo-log-likelihood, generating by iterative
unmasking.

Training (:func:`mlm_corrupt`): in every block, 15% of the positions are chosen; a chosen token is replaced by
``[MASK]`` with probability 0.8, by a random token with 0.1 and kept with 0.1 (BERT's 80/10/10 rule, so the model
cannot tell which visible tokens to trust and keeps a representation of every token); the loss is the
cross-entropy at the chosen positions only. Masks are drawn afresh every step (dynamic masking, RoBERTa, Liu et al.
2019). ``span_masking`` chooses contiguous spans instead (SpanBERT, Joshi et al. 2020,
https://arxiv.org/abs/1907.10529: span lengths geometric with mean ``mean_span``, clipped at ``max_span``), which
makes the task harder than filling a character from both neighbours.

Evaluation: ``val/loss`` is the masked-token loss under the training corruption with fixed masks (the same
positions at every validation, so runs compare), ``val/mask_accuracy`` the top-1 accuracy at the positions
replaced by ``[MASK]``. The pseudo-log-likelihood (Salazar et al. 2020, https://arxiv.org/abs/1910.14659) scores
each token with every other token visible: ``PLL(x) = sum_t log p(x_t | x_{-t})``; reported in bits per character
(or byte) as ``val/pll_bits_per_<unit>`` on the first ``pll_blocks`` validation blocks and ``test/...`` on every
test block, on the scale of the GPT's bits per character over the same blocks. It is not a normalised
likelihood (it can undercut an autoregressive model's true one), and each block costs ``block_size`` forwards.

Generation (:meth:`MaskedLM.fill`): the masked positions of a sequence are filled over ``steps`` rounds (MaskGIT,
Chang et al. 2022, https://arxiv.org/abs/2202.04200; Mask-Predict, Ghazvininejad et al. 2019): each round predicts
every masked position, samples a token for each, and commits the most confident ones, leaving
``N cos(pi/2 * s / steps)`` masked after round ``s`` (the cosine schedule), so early rounds commit few tokens and
later rounds condition on them. Unmasked tokens are never changed. ``genlit sample --prompt "To be, or not to
[MASK][MASK][MASK]"`` fills a prompt's masks; without a prompt, ``length`` masks are filled from nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from genlit.data.tokenizers import MASK, Tokenizer
from genlit.families.base import GenerativeFamily, NonFinitePolicy
from genlit.families.lora import TRANSFORMER_TARGETS
from genlit.families.token_sampling import check_sampling_options, sample_next
from genlit.families.tokenized import TokenizedModel
from genlit.optim import decay_groups
from genlit.seeding import SampleRNG

_EVAL_SEED = 20190101  # the validation masks: the same positions at every validation


def _check_rates(rate: float, split: tuple[float, float, float]) -> None:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"mask_rate must lie strictly between 0 and 1, got {rate}")
    if len(split) != 3 or min(split) < 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(f"mask_split is three probabilities (mask, random, keep) summing to 1, got {list(split)}")


def choose_positions(
    shape: tuple[int, int], rate: float, generator: torch.Generator | None, device, span: tuple[float, int] | None
) -> Tensor:
    """Boolean (B, T): the positions to predict. Without ``span``, exactly ``max(1, round(rate T))`` uniformly
    chosen positions per row. With ``span = (mean, max)``: spans start at each position with probability
    ``rate / mean``, their lengths geometric with that mean, clipped at ``max`` (a position covered by any span is
    chosen; overlaps make the share a little under ``rate``); a row left without any gets one position."""
    b, t = shape
    scores = torch.rand(b, t, generator=generator, device=device)  # (B, T)
    if span is None:
        k = max(1, round(rate * t))
        rank = scores.argsort(dim=1).argsort(dim=1)  # (B, T): rank of each position's score
        return rank < k
    mean, longest = span
    starts = torch.rand(b, t, generator=generator, device=device) < rate / mean  # (B, T)
    # geometric lengths >= 1 with mean `mean`: 1 + floor(log(u) / log(1 - 1/mean))
    u = torch.rand(b, t, generator=generator, device=device).clamp_min(1e-12)
    if mean > 1:
        lengths = (1 + torch.floor(torch.log(u) / math.log(1 - 1 / mean))).clamp(max=longest).long()  # (B, T)
    else:
        lengths = torch.ones(b, t, dtype=torch.long, device=device)
    positions = torch.arange(t, device=device)  # (T,)
    ends = torch.where(starts, positions + lengths, -1)  # (B, T): the (exclusive) end of a span starting there
    covered = ends.cummax(dim=1).values > positions  # (B, T): inside a span that started at or before it
    empty = ~covered.any(dim=1)  # (B,)
    if empty.any():
        covered[empty, scores[empty].argmin(dim=1)] = True
    return covered


def mlm_corrupt(
    tokens: Tensor,
    mask_id: int,
    rate: float = 0.15,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    span: tuple[float, int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's corruption of token ids (B, T): ``(inputs, chosen)``, the corrupted ids (B, T) and the boolean (B, T)
    positions the loss is taken at (see :func:`choose_positions`). A chosen token becomes ``mask_id`` with
    probability ``split[0]``, a uniformly random other token with ``split[1]`` (never the mask, which is the last
    id), and stays with ``split[2]``."""
    chosen = choose_positions(tuple(tokens.shape), rate, generator, tokens.device, span)  # (B, T)
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)  # (B, T)
    to_mask = chosen & (u < split[0])
    to_random = chosen & (u >= split[0]) & (u < split[0] + split[1])
    random = torch.randint(0, mask_id, tokens.shape, generator=generator, device=tokens.device)  # (B, T), < mask_id
    inputs = torch.where(to_random, random, tokens)
    inputs = inputs.masked_fill(to_mask, mask_id)
    return inputs, chosen


def cosine_remaining(total: Tensor, step: int, steps: int) -> Tensor:
    """How many of ``total`` (B,) masked positions stay masked after round ``step`` (1-based) of ``steps``:
    ``floor(total cos(pi/2 step / steps))``, 0 after the last round (the cosine there rounds to about +-1e-16)."""
    return torch.floor(total * math.cos(math.pi / 2 * step / steps)).long().clamp_min(0)


class MaskedLM(TokenizedModel, GenerativeFamily):
    """Masked language model over a bidirectional net (see the module docstring).

    Args:
        net: factory called as ``net(vocab_size, block_size)``; it must be bidirectional (``genlit.nets.gpt.GPT``
            with ``causal: false``: the GPT's blocks without the causal mask).
        vocab_size / block_size: linked from the DataModule (``genlit.data.text.TextDataModule`` with
            ``mask_token: true``: the tokenizer's last id is ``[MASK]``).
        mask_rate: share of positions chosen per block (BERT: 0.15).
        mask_split: probabilities that a chosen token is masked, replaced by a random token, kept (0.8/0.1/0.1).
        span_masking: choose contiguous spans (SpanBERT) instead of single positions.
        mean_span / max_span: the spans' mean length (geometric) and longest.
        pll_blocks: validation blocks scored by pseudo-log-likelihood at each validation (each costs
            ``block_size`` forwards; 0: none). The test scores every test block.
        weight_decay / optimizer / lr_scheduler / compile / on_nonfinite: as the autoregressive family's.
    """

    progress_bar_metrics = ("loss",)
    lora_targets = TRANSFORMER_TARGETS
    metric_panels = {
        "masked-token loss (nats)": ("loss",),
        "fill-mask accuracy": ("mask_accuracy",),
        "pseudo-log-likelihood (bits per char or byte)": ("pll_bits_per_char", "pll_bits_per_byte"),
    }

    def __init__(
        self,
        net: Callable[[int, int], nn.Module],
        vocab_size: int = 0,
        block_size: int = 256,
        mask_rate: float = 0.15,
        mask_split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        span_masking: bool = False,
        mean_span: float = 3.0,
        max_span: int = 10,
        pll_blocks: int = 16,
        weight_decay: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, on_nonfinite=on_nonfinite)
        if vocab_size < 2 or block_size < 1:
            raise ValueError(
                f"vocab_size must be >= 2 and block_size >= 1, got {vocab_size} and {block_size}; they come from "
                "the DataModule (genlit.data.text.TextDataModule with mask_token: true) or must be given"
            )
        _check_rates(mask_rate, tuple(mask_split))
        if mean_span < 1 or max_span < 1 or pll_blocks < 0 or weight_decay < 0:
            raise ValueError("mean_span and max_span must be >= 1, pll_blocks and weight_decay >= 0")
        self.save_hyperparameters()
        self.net = net(vocab_size, block_size)
        if getattr(self.net, "causal", False):
            raise ValueError(
                "a masked language model needs a bidirectional net; give the GPT net causal: false "
                "(--model.net.init_args.causal false)"
            )
        self.mask_id = vocab_size - 1  # the tokenizer's [MASK] is its last id (checked against the tokenizer)
        self.tokenizer: Tokenizer | None = None
        self._forward = (torch.compile(self.net) if compile else self.net,)
        self._unit_lengths: Tensor | None = None
        self.val_loss, self.val_accuracy, self.val_pll = MeanMetric(), MeanMetric(), MeanMetric()
        self.test_loss, self.test_accuracy, self.test_pll = MeanMetric(), MeanMetric(), MeanMetric()

    # ----------------------------------------------------------------------------------------- tokenizer
    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """The tokenizer's size must be the model's and its last id ``[MASK]``."""
        super().check_tokenizer(tokenizer)
        if tokenizer.mask_id != self.mask_id:
            raise ValueError(
                f"a masked language model needs the tokenizer's {MASK} token as its last id; set "
                "--data.mask_token true (genlit.data.text.TextDataModule)"
            )

    # ------------------------------------------------------------------------------------------ training
    def forward(self, idx: Tensor) -> Tensor:
        """Logits (B, T, V) of token ids (B, T), every position seeing every other."""
        return self._forward[0](idx)

    def corrupt(self, tokens: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """:func:`mlm_corrupt` with this model's mask id, rate, split and span settings."""
        hp = self.hparams
        span = (hp.mean_span, hp.max_span) if hp.span_masking else None
        return mlm_corrupt(tokens, self.mask_id, hp.mask_rate, tuple(hp.mask_split), span, generator)

    def masked_loss(
        self, tokens: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """``(loss, correct, masked, chosen)``: the mean cross-entropy at the chosen positions of corrupted
        ``tokens`` (B, T); at the positions replaced by ``[MASK]`` (``masked``, (B, T) bool), whether the top-1
        prediction is right (K,) bool; and how many positions were chosen (the loss's weight in a mean)."""
        inputs, chosen = self.corrupt(tokens, generator)
        logits = self(inputs)  # (B, T, V)
        loss = F.cross_entropy(logits[chosen].float(), tokens[chosen])
        masked = inputs == self.mask_id  # (B, T)
        correct = logits[masked].argmax(-1) == tokens[masked]  # (K,)
        return loss, correct, masked, int(chosen.sum())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        """Masked-token cross-entropy of the blocks ``x`` of a batch ``(x, y)`` (``y``, the next tokens, unused)."""
        tokens = batch[0]
        inputs, chosen = self.corrupt(tokens)
        loss = F.cross_entropy(self(inputs)[chosen].float(), tokens[chosen])  # no accuracy: the step stays lean
        if not self.loss_is_finite(loss):
            return None
        self.log_train_step(loss=loss)
        return loss

    # --------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Masked-token loss and fill-mask accuracy with fixed masks; PLL on the first ``pll_blocks`` blocks."""
        x = batch[0]
        self._masked_metrics(x, batch_idx, self.val_loss, self.val_accuracy)
        seen = batch_idx * len(x)  # blocks before this batch (the validation batches are all full but the last)
        if seen < self.hparams.pll_blocks:
            self._pll_update(x[: self.hparams.pll_blocks - seen], self.val_pll)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Masked-token loss, fill-mask accuracy and PLL of every test block."""
        self._masked_metrics(batch[0], batch_idx, self.test_loss, self.test_accuracy)
        self._pll_update(batch[0], self.test_pll)

    def _masked_metrics(self, x: Tensor, batch_idx: int, loss: MeanMetric, accuracy: MeanMetric) -> None:
        generator = torch.Generator(x.device).manual_seed(_EVAL_SEED + batch_idx)
        value, correct, _, chosen = self.masked_loss(x, generator)
        loss.update(value, weight=chosen)
        if correct.numel():
            accuracy.update(correct.float().mean(), weight=correct.numel())

    def _pll_update(self, x: Tensor, pll: MeanMetric) -> None:
        nll = self.pseudo_nll(x)  # (B, T)
        units = self.units_of(x).sum()
        if units > 0:
            pll.update(nll.sum() / math.log(2) / units, weight=units)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/mask_accuracy`` and ``val/pll_bits_per_<unit>``."""
        self._log_evaluation("val", self.val_loss, self.val_accuracy, self.val_pll)

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss``, ``test/mask_accuracy`` and ``test/pll_bits_per_<unit>``."""
        self._log_evaluation("test", self.test_loss, self.test_accuracy, self.test_pll)

    def _log_evaluation(self, stage: str, loss: MeanMetric, accuracy: MeanMetric, pll: MeanMetric) -> None:
        if loss.update_count:
            self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "val")
        if accuracy.update_count:
            self.log(f"{stage}/mask_accuracy", accuracy.compute())
        if pll.update_count:
            self.log(f"{stage}/pll_bits_per_{self.unit}", pll.compute(), prog_bar=stage == "val")
        for metric in (loss, accuracy, pll):
            metric.reset()

    @torch.no_grad()
    def pseudo_nll(self, tokens: Tensor, chunk: int = 512) -> Tensor:
        """Per-token pseudo negative log-likelihood in nats (B, T): ``-log p(x_t | x_{-t})``, token t masked
        alone and every other visible (Salazar et al. 2020). Runs ``B T`` sequences, ``chunk`` per forward."""
        b, t = tokens.shape
        copies = tokens[:, None, :].expand(b, t, t).clone()  # (B, T, T): copy i of row b ...
        eye = torch.eye(t, dtype=torch.bool, device=tokens.device)  # (T, T)
        copies[:, eye] = self.mask_id  # ... has its token i masked
        flat = copies.view(b * t, t)  # (B T, T)
        position = torch.arange(t, device=tokens.device).repeat(b)  # (B T,): the masked position of each copy
        nll = []
        for start in range(0, b * t, chunk):
            logits = self(flat[start : start + chunk])  # (n, T, V)
            rows = torch.arange(len(logits), device=tokens.device)
            at = logits[rows, position[start : start + chunk]].float()  # (n, V): logits at the masked position
            target = tokens.view(-1)[start : start + chunk]  # (n,)
            nll.append(F.cross_entropy(at, target, reduction="none"))
        return torch.cat(nll).view(b, t)

    # ---------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def fill(
        self,
        ids: Tensor,
        steps: int = 8,
        temperature: float = 1.0,
        top_k: int | None = None,
        rng: SampleRNG | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Token ids (B, T) with every ``[MASK]`` of ``ids`` (B, T) filled over ``steps`` rounds (MaskGIT's cosine
        schedule, see the module docstring); every other token is left as it is. Row b draws from its own stream
        of ``rng`` (a :class:`~genlit.seeding.SampleRNG`). Temperature 0 picks the most likely tokens."""
        check_sampling_options(temperature, top_k, None)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if ids.shape[1] > self.hparams.block_size:
            raise ValueError(f"the text has {ids.shape[1]} tokens, more than block_size {self.hparams.block_size}")
        rng = SampleRNG.for_call(len(ids), rng, self.device)
        ids = ids.to(self.device).clone()
        total = (ids == self.mask_id).sum(dim=1)  # (B,)
        b, t = ids.shape
        with self.eval_mode():
            for step in tqdm(range(1, steps + 1), desc="unmasking", unit="step", disable=not progress, leave=False):
                masked = ids == self.mask_id  # (B, T)
                if not masked.any():
                    break
                logits = self(ids).float()  # (B, T, V)
                logits[..., self.mask_id] = float("-inf")  # never predict the mask itself
                uniform = rng.rand(t).reshape(-1)  # (B T,): one uniform per position, from row b's stream
                tokens = sample_next(logits.view(b * t, -1), temperature, top_k, None, uniform=uniform).view(b, t)
                probs = logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T): confidence
                confidence = probs.masked_fill(~masked, float("inf"))  # committed tokens rank last
                keep_masked = cosine_remaining(total, step, steps)  # (B,)
                rank = confidence.argsort(dim=1).argsort(dim=1)  # (B, T): 0 = least confident
                commit = masked & (rank >= keep_masked[:, None])
                ids = torch.where(commit, tokens, ids)
        return ids

    def encode_prompt(self, prompt: str) -> Tensor:
        """Token ids (1, T) of a prompt holding at least one ``[MASK]`` (one clear error otherwise)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; train it with a genlit TextDataModule (mask_token: true)")
        if MASK not in prompt:
            raise ValueError(
                f"a masked language model fills {MASK} tokens and this prompt has none; write {MASK} where text "
                f"should go (e.g. 'To be, or not to {MASK}{MASK}{MASK}'), or give no prompt to generate freely"
            )
        ids = self.tokenizer.encode(prompt)
        if len(ids) > self.hparams.block_size:
            raise ValueError(f"the prompt has {len(ids)} tokens, more than block_size {self.hparams.block_size}")
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        prompt: str | None = None,
        length: int | None = None,
        steps: int = 8,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> list[str]:
        """``num`` texts: ``prompt`` with its ``[MASK]`` tokens filled, or ``length`` tokens generated from masks
        alone, each text from its own stream of ``rng``.

        Args:
            prompt: text with ``[MASK]`` where tokens should go (None: generate freely).
            length: tokens generated freely (default ``block_size``); not with a prompt.
            steps: unmasking rounds (more: slower, each token sees more of the others).
            temperature: 0 picks the most likely tokens.
            top_k: sample among the k most likely tokens.
        """
        if prompt is not None:
            ids = self.encode_prompt(prompt).expand(num, -1)  # (num, T)
        else:
            ids = self.free_ids(num, length)  # (num, T)
        out = self.fill(ids, steps, temperature, top_k, rng)  # (num, T)
        return [self.decode(row) for row in out]

    def decode(self, ids: Tensor) -> str:
        """The text of token ids (T,) (their numbers without a tokenizer)."""
        return self.tokenizer.decode(ids.tolist()) if self.tokenizer else " ".join(map(str, ids.tolist()))

    def free_ids(self, num: int, length: int | None = None) -> Tensor:
        """``num`` rows of ``length`` (default ``block_size``) masks: what free generation starts from."""
        return torch.full((num, length or self.hparams.block_size), self.mask_id, device=self.device)

    def validate_sample_options(self, prompt=None, length=None, steps=8, temperature=1.0, top_k=None, **_) -> None:
        """A prompt with ``[MASK]`` (or none), a length that fits, positive steps, temperature and top-k ranges."""
        if prompt is not None:
            if length is not None:
                raise ValueError("give either a prompt (its [MASK] tokens are filled) or a length, not both")
            self.encode_prompt(prompt)
        if length is not None and not 1 <= length <= self.hparams.block_size:
            raise ValueError(f"length must lie in [1, block_size={self.hparams.block_size}], got {length}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        check_sampling_options(temperature, top_k, None)

    # -------------------------------------------------------------------------------------- optimization
    def optimized_parameters(self) -> list[dict]:
        """As the autoregressive family's: decayed matrices (the blocks' tagged for Muon), the rest undecayed."""
        return decay_groups(self.net, self.hparams.weight_decay, getattr(self.net, "blocks", None))
