"""Text-to-image diffusion: the DDPM family conditioned on a caption through cross-attention.

A text encoder (:mod:`genlit.nets.text_encoder`: a small transformer trained jointly, or a frozen CLIP / T5 from
``transformers``) turns the caption's token ids into embeddings; the denoiser (a UNet or DiT built with
``context_dim`` = the encoder's width) cross-attends to them at its attention resolutions, padded tokens masked
out, and adds their mean to its time embedding. The two form one net (:class:`~genlit.nets.text_encoder.
TextConditioned`) called as ``net(x, t, ids)``, where ids (B, L) hold the tokens and ``PAD`` (-1) at padded
positions: packed that way, a batch of captions is one tensor that flows through
:class:`~genlit.families.denoising.DenoisingFamily` where class labels do. The empty prompt (all padding) is the
"no condition" of classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598): training
replaces a ``prompt_dropout`` share of the captions by it, and sampling mixes the outputs on the prompt and on the
empty prompt with the guidance scale s, out = out_empty + s (out_prompt - out_empty).

The tokenizer comes from the captioned DataModule at ``setup`` and travels in the checkpoint, so
``genlit sample --ckpt C --prompt "a handwritten three" --guidance-scale 4`` needs nothing else. Metrics: the
DDPM family's, plus ``test/loss_empty_prompt`` (the same noise, every caption replaced by the empty prompt): with
the test split captioned by held-out templates (the DataModule's default), ``test/loss`` below it says the model
follows phrasings it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.data.captions import PAD, caption_tokenizer_from_json, pack_texts
from genlit.diffusion.samplers import Sampler
from genlit.diffusion.schedules import NoiseSchedule
from genlit.diffusion.targets import PredictionTarget
from genlit.families.base import NonFinitePolicy, ShapeNetFactory
from genlit.families.diffusion import Diffusion
from genlit.families.protocols import OnnxGraph, OnnxInput
from genlit.families.tokenized import StoresTokenizer
from genlit.nets.text_encoder import TextConditioned, TextTransformer
from genlit.seeding import SampleRNG

TextEncoderFactory = Callable[[int, int], nn.Module]
"""A text encoder class (or callable) taking ``(vocab_size, max_tokens)``; YAML gives its other init_args."""


class TextDiffusion(StoresTokenizer, Diffusion):
    """A DDPM diffusion model conditioned on captions (see the module docstring).

    Args:
        net: the backbone factory (UNet or DiT), called as ``net(data_shape, 0, context_dim=encoder.dim)``.
        text_encoder: factory called as ``text_encoder(vocab_size, block_size)`` (default: ``TextTransformer``).
        vocab_size / block_size: the tokenizer's vocabulary and the caption length in tokens (linked from the
            captioned DataModule).
        prompt_dropout: probability of replacing a training caption by the empty prompt.
        token_dropout: probability of replacing each token of a training caption by the tokenizer's unknown word
            (``tokenizer: word``'s ``[UNK]``), so that unknown words in a prompt read as "nothing said".
        token_insertion: probability of inserting an unknown word before each token of a training caption (the
            caption shifts right, cut at ``block_size``), so that unknown words also move the known ones to
            positions training did not put them in, as unseen phrasings do.
        guidance_scale: the default classifier-free guidance scale of sampling (1: the conditional model alone).
        prompts: what :meth:`sample` draws without a ``prompt`` (sample i gets ``prompts[i % len]``; e.g. one per
            digit for the training-time sample grid); empty: the empty prompt (unconditional samples).

    The other arguments are :class:`~genlit.families.diffusion.Diffusion`'s.
    """

    read_tokenizer_json = staticmethod(caption_tokenizer_from_json)  # a genlit or a Hugging Face tokenizer

    def __init__(
        self,
        net: ShapeNetFactory,
        text_encoder: TextEncoderFactory | None = None,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        vocab_size: int = 0,
        block_size: int = 48,
        schedule: NoiseSchedule | None = None,
        sampler: Sampler | None = None,
        prediction: PredictionTarget = "eps",
        min_snr_gamma: float | None = None,
        prompt_dropout: float = 0.1,
        token_dropout: float = 0.0,
        token_insertion: float = 0.0,
        guidance_scale: float = 1.0,
        prompts: list[str] | None = None,
        clip_x0: bool = True,
        ema_decay: float = 0.9999,
        nll_timesteps: int | None = 50,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        if vocab_size < 1 or block_size < 1:
            raise ValueError(
                f"TextDiffusion needs captioned data (vocab_size and block_size >= 1, got {vocab_size} and "
                f"{block_size}); use genlit.data.captioned.CaptionedImageDataModule"
            )
        if num_classes:
            raise ValueError("TextDiffusion is conditioned on captions, not class labels; use data without labels")
        if not (0 <= token_dropout < 1 and 0 <= token_insertion < 1):
            raise ValueError(f"token_dropout and token_insertion must be in [0, 1), got {token_dropout} and "
                             f"{token_insertion}")  # fmt: skip
        self._text_args = (text_encoder or TextTransformer, vocab_size, block_size)  # for build_net, before hparams
        super().__init__(net, data_shape, 0, schedule, sampler, prediction, min_snr_gamma, False, prompt_dropout,
                         guidance_scale, clip_x0, ema_decay, nll_timesteps, optimizer, lr_scheduler,
                         on_nonfinite)  # fmt: skip
        self.null_label = PAD  # the empty prompt: every position padding
        self.tokenizer = None

    def build_net(self, net: ShapeNetFactory, num_classes: int) -> nn.Module:
        """The text encoder and the backbone cross-attending to it, as one :class:`TextConditioned` net."""
        factory, vocab_size, block_size = self._text_args
        encoder = factory(vocab_size, block_size)
        return TextConditioned(encoder, net(self.latent_shape, 0, context_dim=encoder.dim))

    # ------------------------------------------------------------------------------------ the tokenizer
    def set_tokenizer(self, tokenizer) -> None:
        """Attach the tokenizer of the captions (checked against the model's vocabulary)."""
        if tokenizer.vocab_size != self.hparams.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model was built for "
                f"{self.hparams.vocab_size}; use the DataModule (and tokenizer) the model was trained with"
            )
        if self._unknown_words and getattr(tokenizer, "unk_id", None) is None:
            raise ValueError(
                f"token_dropout and token_insertion need a tokenizer with an unknown-word token; "
                f"{type(tokenizer).__name__} has none: use --data.tokenizer word (or set both to 0)"
            )
        self.tokenizer = tokenizer

    def setup(self, stage: str) -> None:
        """Take the tokenizer of the trainer's DataModule."""
        super().setup(stage)
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)

    def prompt_ids(self, prompt: str | Sequence[str] | None, indices: Tensor) -> Tensor:
        """Packed token ids (N, block_size) of the prompts of samples with global ``indices`` (N,): one prompt for
        all, or ``prompt[i % len]`` for sample i; None: the model's ``prompts`` (or the empty prompt)."""
        if prompt is None:
            prompts = self.hparams.prompts or [""]
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = [prompts[int(i) % len(prompts)] for i in indices]
        if self.tokenizer is None:
            if any(texts):
                raise ValueError("this model has no tokenizer (it was not trained with a captioned DataModule)")
            return torch.full((len(texts), self.hparams.block_size), PAD, dtype=torch.long, device=self.device)
        return pack_texts(self.tokenizer, texts, self.hparams.block_size, truncate=False).to(self.device)

    # ------------------------------------------------------------------------------------ sampling
    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        prompt: str | list[str] | None = None,
        sampler: Sampler | None = None,
        guidance_scale: float | None = None,
        step_progress: bool = False,
    ) -> Tensor:
        """``num`` samples (num, *data_shape) in [-1, 1] of the prompt(s), from noise drawn per sample by ``rng``.

        Args:
            prompt: the caption of every sample, or a list: sample i gets item ``i % len`` (default: the model's
                ``prompts``, else the empty prompt).
            sampler: the reverse-process sampler (default: the model's own).
            guidance_scale: classifier-free guidance scale on the text (default: the model's own; 1: the
                text-conditional model alone, 0: the empty prompt's).
            step_progress: show a bar over the denoising steps.
        """
        ids = self.prompt_ids(prompt, rng.indices)  # (num, L)
        return super().draw(num, ids, rng, sampler=sampler, guidance_scale=guidance_scale, step_progress=step_progress)

    def validate_sample_options(self, prompt=None, sampler=None, guidance_scale=None, step_progress=False) -> None:
        """Prompts are a string or a non-empty list of strings the tokenizer can encode; the sampler as usual."""
        if prompt is not None:
            if not isinstance(prompt, str) and (not prompt or not all(isinstance(p, str) for p in prompt)):
                raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
            self.prompt_ids(prompt, torch.arange(1 if isinstance(prompt, str) else len(prompt)))
        super().validate_sample_options(sampler, None, step_progress)

    def sample_labels(self, indices: Tensor, labels=None) -> None:
        """A text-conditional model takes prompts, never class labels."""
        if labels is not None:
            raise ValueError("this TextDiffusion is conditioned on text; pass prompt=... instead of labels")
        return None

    def onnx_graph(self) -> OnnxGraph:
        """The denoiser: ``x_t`` (B, C, H, W), ``t`` (B,) int64 timesteps and ``ids`` (B, block_size) int64, the
        caption's token ids packed as :func:`~genlit.data.captions.pack_texts` packs them (-1 at padded positions;
        all -1: the empty prompt of guidance) -> ``prediction``. The tokenizer is exported beside it
        (``tokenizer.json``); the sampler's loop and guidance stay outside."""
        graph = super().onnx_graph()
        ids = OnnxInput("ids", ("batch", self.hparams.block_size), torch.long, self.hparams.vocab_size)
        description = f"the denoiser: (x_t, t, ids) -> the {self.hparams.prediction} prediction"
        return OnnxGraph(graph.module, (*graph.inputs, ids), graph.output, description)

    # ------------------------------------------------------------------------------------ conditioning
    def _net_labels(self, labels: Tensor | None, guidance_scale: float) -> Tensor:
        """The packed ids (B, L) the net reads: all padding (the empty prompt) for guidance scale 0."""
        if labels is None:
            raise ValueError("this diffusion model is text-conditional: pass token ids (B, L)")
        ids = torch.as_tensor(labels, device=self.device, dtype=torch.long)
        return torch.full_like(ids, PAD) if guidance_scale == 0 else ids

    def _training_labels(self, y: Tensor) -> Tensor:
        """Captions (B, L) with unknown words inserted (``token_insertion``), a ``token_dropout`` share of the
        tokens replaced by the unknown word, and a ``prompt_dropout`` share of the captions by the empty prompt."""
        if self._unknown_words:
            if self.tokenizer is None:
                raise ValueError("token_dropout and token_insertion need the tokenizer of a captioned DataModule "
                                 "(tokenizer: word)")  # fmt: skip
            unk = self.tokenizer.unk_id
            if self.hparams.token_insertion:
                y = insert_unknown(y, self.hparams.token_insertion, unk)
            unknown = (torch.rand(y.shape, device=y.device) < self.hparams.token_dropout) & (y >= 0)  # (B, L)
            y = torch.where(unknown, torch.full_like(y, unk), y)
        drop = torch.rand(y.shape[0], 1, device=y.device) < self.hparams.prompt_dropout  # (B, 1)
        return torch.where(drop, torch.full_like(y, PAD), y)

    @property
    def _unknown_words(self) -> bool:
        """Whether training puts unknown words into the captions."""
        return bool(self.hparams.token_dropout or self.hparams.token_insertion)

    def _eval_labels(self, y: Tensor) -> Tensor:
        return y

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The DDPM test metrics on the captions, and ``test/loss_empty_prompt`` on the same noise without them."""
        super().test_step(batch, batch_idx)
        x, y = batch
        with self.ema_weights():
            loss, _ = self.losses(x, torch.full_like(y, PAD), self._seeded(x, batch_idx))
        self.log("test/loss_empty_prompt", loss.mean(), sync_dist=True, batch_size=len(x))


def insert_unknown(ids: Tensor, p: float, unk: int) -> Tensor:
    """Packed ids (B, L) (real tokens first, then ``PAD``) with the id ``unk`` inserted before each real token with
    probability ``p``: the tokens after an insertion shift right, and what passes position L is cut."""
    batch, length = ids.shape
    real = ids >= 0  # (B, L)
    inserted = (torch.rand(ids.shape, device=ids.device) < p) & real  # (B, L): an unknown word before token j
    position = torch.arange(length, device=ids.device) + inserted.long().cumsum(1)  # (B, L): token j's new place
    rows = torch.arange(batch, device=ids.device).unsqueeze(1).expand(batch, length)  # (B, L)
    out = torch.full_like(ids, PAD)
    kept = real & (position < length)
    out[rows[kept], position[kept]] = ids[kept]
    before = inserted & (position - 1 < length)
    out[rows[before], position[before] - 1] = unk
    return out
