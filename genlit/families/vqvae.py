"""VQ-VAE family: a discrete bottleneck with an EMA codebook, and sampling through a learned prior over its codes.

Van den Oord et al. 2017, "Neural Discrete Representation Learning", https://arxiv.org/abs/1711.00937. The encoder
maps an image to a grid of vectors z_e; the quantizer (:class:`genlit.nets.vqvae.VectorQuantizer`) replaces each
by its nearest code, keeps the codebook as moving averages of the vectors assigned to each code (the paper's
appendix A.1) and restarts codes nobody uses; the decoder maps the codes back. Gradients pass the quantization
straight through (d loss/d z_e = d loss/d z_q). The loss is the reconstruction error plus the commitment loss
``beta * mean((z_e - sg[e])^2)`` (:mod:`genlit.objectives.vector_quantization`). Logged: ``mse`` (per pixel, in
[0, 1] units), ``recon`` (the objective's reconstruction term), ``commitment``, and the codebook's use:
``perplexity`` (exp of the entropy of the code assignments: K when all K codes are used equally, 1 for one code)
and ``codes_used`` (codes chosen at least once), per training batch and over each validation and test epoch.

Sampling is two-stage, as in the paper. The VQ-VAE is trained with a uniform prior over the codes (its KL term is
the constant log K per position), so without a learned prior :meth:`VQVAE.draw` decodes uniformly random codes,
with a warning: they are the model's own samples, but do not look like the data. A learned prior is an
:class:`~genlit.families.autoregressive.AutoregressiveLM` over the code grids in raster order: ``genlit encode``
writes a split's codes to an ``.npz``, ``genlit fit`` trains the prior on it (``TokenSequenceDataModule``), and
``genlit sample --ckpt VQVAE --prior PRIOR`` draws code grids from the prior (sample i from its own stream, as
every family) and decodes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from genlit.checkpoints import load_family
from genlit.families.autoregressive import AutoregressiveLM
from genlit.families.base import GenerativeFamily, NonFinitePolicy
from genlit.families.token_sampling import check_sampling_options
from genlit.metrics.codebook import CodeUsage, codes_in_use, perplexity
from genlit.objectives.vector_quantization import (
    Reconstruction,
    check_reconstruction,
    commitment_loss,
    images_of,
    reconstruction_loss,
    squared_error,
)
from genlit.seeding import SampleRNG

VQNetFactory = Callable[[tuple[int, ...], int], nn.Module]
"""An encoder or decoder class taking ``(data_shape, embedding_dim)``; YAML gives its other init_args."""
QuantizerFactory = Callable[[int], nn.Module]
"""A quantizer class taking ``(embedding_dim)`` (e.g. :class:`~genlit.nets.vqvae.VectorQuantizer`)."""


class VQVAE(GenerativeFamily):
    """VQ-VAE with encoder, quantizer and decoder passed in.

    Args:
        encoder: factory called as ``encoder(data_shape, embedding_dim)``; maps images (B, C, H, W) in [-1, 1] to
            z_e (B, embedding_dim, h, w).
        decoder: factory called the same way; maps codes (B, embedding_dim, h, w) to the reconstruction's
            parameters (B, C, H, W): means in [-1, 1] (``mse``) or logits of intensities in [0, 1] (``bce``).
        quantizer: factory called as ``quantizer(embedding_dim)`` (e.g. :class:`~genlit.nets.vqvae.VectorQuantizer`
            with its ``num_codes``, ``decay`` and restart options); returns a
            :class:`~genlit.nets.vqvae.Quantized` and offers ``nearest``, ``embed`` and ``num_codes``.
        data_shape / num_classes: linked from the DataModule by the CLI.
        conditional: must be false (the VQ-VAE is unconditional).
        embedding_dim: size of each code (one value shared by encoder, quantizer and decoder).
        beta: weight of the commitment loss (the paper: 0.25).
        reconstruction: ``mse`` (mean squared error in model space, the paper's) or ``bce`` (binary cross-entropy
            of pixel intensities in [0, 1], soft targets).
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("mse", "perplexity")
    metric_panels = {
        "reconstruction MSE (per pixel, [0, 1] units)": ("mse",),
        "commitment loss": ("commitment",),
        "codebook perplexity": ("perplexity",),
        "codes in use": ("codes_used",),
    }

    def __init__(
        self,
        encoder: VQNetFactory,
        decoder: VQNetFactory,
        quantizer: QuantizerFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        embedding_dim: int = 64,
        beta: float = 0.25,
        reconstruction: Reconstruction = "mse",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        _check_options(conditional, embedding_dim, beta, reconstruction)
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.data_shape = tuple(data_shape)
        self.encoder = encoder(self.data_shape, embedding_dim)
        self.quantizer = quantizer(embedding_dim)
        self.decoder = decoder(self.data_shape, embedding_dim)
        with torch.no_grad():
            grid = tuple(self.encoder(torch.zeros(1, *self.data_shape)).shape)  # (1, D, h, w)
        if len(grid) != 4 or grid[1] != embedding_dim:
            raise ValueError(f"the encoder must map (B, *data_shape) to (B, {embedding_dim}, h, w), gave {grid}")
        self.code_shape: tuple[int, int] = grid[2:]
        self.val_usage, self.test_usage = CodeUsage(self.num_codes), CodeUsage(self.num_codes)
        self._priors: dict[str, AutoregressiveLM] = {}  # loaded prior checkpoints, by path (not submodules)
        self._warned_uniform = False

    @property
    def num_codes(self) -> int:
        """K, the codebook size."""
        return self.quantizer.num_codes

    # ------------------------------------------------------------------------------------ model pieces
    def encode_codes(self, x: Tensor) -> Tensor:
        """The codes, int64 (B, h, w), of model-space images x (B, C, H, W) (the codebook is not updated)."""
        return self.quantizer.nearest(self.encoder(x))[0]

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] of code grids (B, h, w), or (B, h * w) in raster order (a prior's
        sequences); one clear error for another shape or an id outside ``0 .. num_codes - 1``."""
        h, w = self.code_shape
        codes = torch.as_tensor(codes, device=self.device)
        if codes.is_floating_point() or codes.dim() not in (2, 3) or codes.shape[1:] not in ((h, w), (h * w,)):
            raise ValueError(
                f"decode_codes takes integer code grids (B, {h}, {w}) or sequences (B, {h * w}), got "
                f"{codes.dtype} {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(
                f"codes must lie in 0 .. {self.num_codes - 1}, got {int(codes.min())} .. {int(codes.max())}"
            )
        codes = codes.long().view(-1, h, w)  # (B, h, w)
        return self._images(self.decoder(self.quantizer.embed(codes)))

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images x (B, C, H, W) through the bottleneck: (B, C, H, W) in [-1, 1] (the codebook is not updated)."""
        return self.decode_codes(self.encode_codes(x))

    def _images(self, params: Tensor) -> Tensor:
        return images_of(self.hparams.reconstruction, params)

    # ------------------------------------------------------------------------------------------ sampling
    def draw(
        self,
        num: int,
        labels: Tensor | None,
        rng: SampleRNG,
        *,
        prior: str | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> Tensor:
        """``num`` images (num, C, H, W) in [-1, 1]: code grids drawn from ``prior`` (each sample from its own
        stream of ``rng``) and decoded; without a prior, uniformly random codes (the VQ-VAE's training prior).

        Args:
            prior: checkpoint of an autoregressive prior over this VQ-VAE's codes (``genlit fit`` of an
                ``AutoregressiveLM`` on a ``genlit encode`` file); default: uniform codes, with a warning.
            temperature: of the prior's next-code distributions (0: the most likely code every time).
            top_k: draw each code among the prior's k most likely.
            top_p: draw each code from the prior's nucleus of probability mass p.
        """
        h, w = self.code_shape
        if prior is None:
            self._warn_uniform()
            codes = (rng.rand(h, w) * self.num_codes).long().clamp_max(self.num_codes - 1)  # (num, h, w)
        else:
            model = self.prior_model(prior)
            codes = model.sample(num, generator=rng, max_new_tokens=h * w, temperature=temperature, top_k=top_k,
                                 top_p=top_p)  # (num, h * w)  # fmt: skip
        return self.decode_codes(codes)

    def validate_sample_options(self, prior=None, temperature=1.0, top_k=None, top_p=None) -> None:
        """The prior loads and fits this VQ-VAE's codes; temperature, top-k and top-p are in range and only given
        with a prior (they shape its draws)."""
        check_sampling_options(temperature, top_k, top_p)
        if prior is None:
            if temperature != 1.0 or top_k is not None or top_p is not None:
                raise ValueError("temperature, top_k and top_p shape a learned prior's draws; give a prior (--prior)")
            return
        self.prior_model(prior)

    def prior_model(self, ckpt: str | Path) -> AutoregressiveLM:
        """The prior of checkpoint ``ckpt`` on this model's device (loaded once), checked to model this VQ-VAE's
        code grids: token ids without a tokenizer, sequences of ``h * w`` codes, no id beyond the codebook."""
        key = str(ckpt)
        if key not in self._priors:
            model = load_family(key, map_location=str(self.device))
            self._priors[key] = self._checked_prior(model, key)
        return self._priors[key].to(self.device)

    def _checked_prior(self, model, ckpt: str) -> AutoregressiveLM:
        h, w = self.code_shape
        fix = "train the prior on this VQ-VAE's codes (genlit encode, then genlit fit with a TokenSequenceDataModule)"
        if not isinstance(model, AutoregressiveLM):
            raise ValueError(
                f"prior {ckpt} holds a {type(model).__name__}, not an autoregressive model of codes; {fix}"
            )
        if model.tokenizer is not None:
            raise ValueError(f"prior {ckpt} is a language model of text (it has a tokenizer), not of codes; {fix}")
        length, codes = model.hparams.block_size, model.hparams.vocab_size - 1  # the last id is BOS
        if length != h * w or codes > self.num_codes:
            raise ValueError(
                f"prior {ckpt} models sequences of {length} ids in 0 .. {codes - 1}, but this VQ-VAE's code grids are "
                f"{h}x{w} = {h * w} ids in 0 .. {self.num_codes - 1}; {fix}"
            )
        return model.eval()

    def _warn_uniform(self) -> None:
        if not self._warned_uniform:
            rank_zero_warn(
                "VQVAE samples without a learned prior decode uniformly random codes (the training prior), which do "
                "not look like the data; train a prior (genlit encode, then genlit fit "
                "experiments/vqvae/vqvae_prior_mnist.yaml) and sample with --prior PRIOR_CKPT"
            )
            self._warned_uniform = True

    # ------------------------------------------------------------------------------------------ steps
    def terms(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms of model-space images x (B, C, H, W) (``loss``, ``recon``, ``commitment``, ``mse`` and
        the batch's ``perplexity`` and ``codes_used``) and the codes (B, h, w). In training mode the quantizer
        updates its codebook."""
        z_e = self.encoder(x)  # (B, D, h, w)
        q = self.quantizer(z_e)
        params = self.decoder(q.z_q)  # (B, C, H, W)
        recon = reconstruction_loss(self.hparams.reconstruction, params, x)
        commitment = commitment_loss(z_e, q.codes)
        terms = {
            "loss": recon + self.hparams.beta * commitment,
            "recon": recon,
            "commitment": commitment,
            "mse": squared_error(self._images(params.detach()), x),
            "perplexity": perplexity(q.counts),
            "codes_used": codes_in_use(q.counts),
        }
        return terms, q.indices

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Minimise recon + beta * commitment; the quantizer updates the codebook (all ranks' statistics)."""
        x, _ = batch
        terms, _ = self.terms(x)
        loss = terms.pop("loss")
        if not self.loss_is_finite(loss, recon=terms["recon"], commitment=terms["commitment"]):
            return None
        self.log_train_step(**{k: v.detach() for k, v in terms.items()})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/mse``, ``val/recon``, ``val/commitment`` and ``val/loss``; the codes feed the epoch's usage."""
        self._evaluate(batch, "val", self.val_usage)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/mse``, ``test/recon``, ``test/commitment`` and ``test/loss``; the codes feed the epoch's usage."""
        self._evaluate(batch, "test", self.test_usage)

    def on_validation_epoch_end(self) -> None:
        """``val/perplexity`` and ``val/codes_used`` of the whole validation epoch's codes."""
        self._log_usage("val", self.val_usage)

    def on_test_epoch_end(self) -> None:
        """``test/perplexity`` and ``test/codes_used`` of the whole test epoch's codes."""
        self._log_usage("test", self.test_usage)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, usage: CodeUsage) -> None:
        x, _ = batch
        terms, indices = self.terms(x)
        usage.update(indices)
        values = {f"{stage}/{k}": terms[k] for k in ("mse", "recon", "commitment", "loss")}
        self.log_dict(values, sync_dist=True, batch_size=x.shape[0])

    def _log_usage(self, stage: str, usage: CodeUsage) -> None:
        if usage.update_count == 0:
            return
        self.log_dict({f"{stage}/{k}": v for k, v in usage.compute().items()})
        usage.reset()


def _check_options(conditional: bool, embedding_dim: int, beta: float, reconstruction: str) -> None:
    if conditional:
        raise ValueError("VQVAE is unconditional; use conditional: false")
    check_reconstruction(reconstruction)
    if embedding_dim < 1 or beta < 0:
        raise ValueError(f"embedding_dim must be >= 1 and beta >= 0, got {embedding_dim} and {beta}")
