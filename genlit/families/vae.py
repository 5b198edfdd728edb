"""VAE family: ELBO training, importance-weighted likelihood evaluation and anomaly scores.

Variational autoencoder (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114): Gaussian posterior
q(z|x) with the reparameterization trick, standard normal prior, Bernoulli or Gaussian likelihood.
``test/nll`` is the importance-weighted bound with ``iw_samples`` samples (Burda et al. 2015,
https://arxiv.org/abs/1509.00519). All log-likelihoods are in nats per example; bits/dim divide by
the number of pixel values (and, for a Gaussian density on 8-bit data, add the bin-width offset).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from genlit.families.anomaly import AnomalyScoring
from genlit.families.base import SAMPLE_QUALITY_PANELS, GenerativeFamily, NonFinitePolicy, is_sample_request
from genlit.objectives.elbo import (
    LikelihoodName,
    binarize_for_stage,
    bits_per_dim,
    check_likelihood_name,
    free_bits_kl,
    from_unit_interval,
    gaussian_kl,
    iw_bound,
    log_likelihood,
    log_normal,
    log_normal_std,
    reparameterize,
    to_unit_interval,
    uniform_dequantization_offset,
)
from genlit.seeding import SampleRNG

VAENetFactory = Callable[[tuple[int, ...], int, int], nn.Module]
"""A net class taking ``(data_shape, num_classes, latent_dim)``; YAML gives its other init_args."""


class VAE(AnomalyScoring, GenerativeFamily):
    """Variational autoencoder with encoder and decoder nets passed in.

    Args:
        encoder: factory called as ``encoder(data_shape, num_classes, latent_dim)``; ``encoder(x, y)``
            returns ``(mu, logvar)``, each (B, latent_dim).
        decoder: factory called the same way; ``decoder(z, y)`` returns the likelihood's parameters
            (Bernoulli logits or Gaussian means) of shape (..., *data_shape) for z of shape (..., latent_dim).
        data_shape / num_classes: linked from the DataModule by the CLI.
        conditional: conditional VAE (labels into encoder and decoder, Sohn et al. 2015); needs labels.
        latent_dim: size of z (one value shared by encoder and decoder).
        likelihood: ``bernoulli`` (pixels in [0, 1]), ``gaussian_fixed`` or ``gaussian_learned`` (scale).
        dynamic_binarization: Bernoulli only: binarize [0, 1] pixels afresh every training step
            (validation and test data are binarized once, with a fixed seed per batch).
        gaussian_scale: the fixed standard deviation, or the initial one of ``gaussian_learned``.
        beta: weight of the KL term (beta-VAE, Higgins et al. 2017).
        kl_warmup_steps: the KL weight rises linearly from 0 to ``beta`` over this many steps
            (Bowman et al. 2016; Sønderby et al. 2016); 0 disables it.
        free_bits: nats per latent dimension below which the KL is not penalised (Kingma et al. 2016).
        iw_samples: importance samples k of ``test/nll`` (and anomaly scores).
        anomaly_background: checkpoint of a background VAE for the likelihood-ratio anomaly score
            (:mod:`genlit.families.anomaly`); usually given at test time.
        iw_chunk: samples decoded at once while computing the bound (memory/speed trade-off).
        optimizer / lr_scheduler: factories; the scheduler is stepped every optimizer step.
        on_nonfinite: on a NaN or infinite training loss, ``stop`` the run (default) or ``skip`` the step.
    """

    progress_bar_metrics = ("elbo",)
    metric_panels = {"ELBO (nats per example)": ("elbo",), "KL (nats per example)": ("kl",), **SAMPLE_QUALITY_PANELS}

    def __init__(
        self,
        encoder: VAENetFactory,
        decoder: VAENetFactory,
        data_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 0,
        conditional: bool = False,
        latent_dim: int = 32,
        likelihood: LikelihoodName = "bernoulli",
        dynamic_binarization: bool = True,
        gaussian_scale: float = 0.1,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        free_bits: float = 0.0,
        iw_samples: int = 1000,
        iw_chunk: int = 100,
        anomaly_background: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        on_nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        check_likelihood_name(likelihood)
        _check_options(latent_dim, gaussian_scale, beta, iw_samples, iw_chunk)
        super().__init__(num_classes, conditional, optimizer, lr_scheduler, on_nonfinite)
        self.save_hyperparameters()
        self.data_shape = tuple(data_shape)
        net_classes = num_classes if conditional else 0
        self.encoder = encoder(self.data_shape, net_classes, latent_dim)
        self.decoder = decoder(self.data_shape, net_classes, latent_dim)
        log_scale = torch.tensor(gaussian_scale).log()
        if likelihood == "gaussian_learned":
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.num_dims = int(torch.tensor(self.data_shape).prod())
        self.dequantization = 0.0 if likelihood == "bernoulli" else uniform_dequantization_offset(1)
        self.init_anomaly_scoring()

    # ------------------------------------------------------------------------------------ model pieces
    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each (B, latent_dim), of model-space data x."""
        return self.encoder(x, self._labels(labels))

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Mean of p(x|z) in model space [-1, 1]: (..., *data_shape)."""
        params = self.decoder(z, self._labels(labels))  # (..., *data_shape)
        if self.hparams.likelihood == "bernoulli":
            return from_unit_interval(torch.sigmoid(params))
        return params.clamp(-1, 1)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Decode the posterior mean of x: (B, *data_shape) in [-1, 1]."""
        return self.decode(self.encode(x, labels)[0], labels)

    @property
    def latent_dim(self) -> int:
        """Size of z."""
        return self.hparams.latent_dim

    def draw(self, num: int, labels: Tensor | None, rng: SampleRNG) -> Tensor:
        """Prior samples: z ~ N(0, I) per sample from ``rng``, decoded to the mean of p(x|z): (num, *data_shape)
        in [-1, 1]."""
        return self.decode(rng.randn(self.latent_dim), labels)

    def _labels(self, labels: Tensor | None) -> Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError("this VAE is conditional: pass labels (B,) with the data")
        return torch.as_tensor(labels, device=self.device, dtype=torch.long)

    # ------------------------------------------------------------------------------------------ ELBO
    def prepare(self, x: Tensor, stage: str, batch_idx: int = 0) -> tuple[Tensor, Tensor]:
        """(encoder input in model space, likelihood target) for a model-space batch x (B, *data_shape)."""
        if self.hparams.likelihood != "bernoulli":
            return x, x
        x01 = to_unit_interval(x)  # (B, *data_shape)
        if self.hparams.dynamic_binarization:  # afresh each training step; evaluation data the same every time
            x01 = binarize_for_stage(x01, stage, batch_idx)
        return from_unit_interval(x01), x01

    def elbo_terms(self, x_in: Tensor, target: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Per-example reconstruction NLL, KL and the KL of the training objective (free bits), (B,) each."""
        mu, logvar = self.encode(x_in, labels)  # (B, Z) each
        params = self.decoder(reparameterize(mu, logvar), self._labels(labels))  # (B, *data_shape)
        recon = -log_likelihood(self.hparams.likelihood, params, target, self.log_scale)  # (B,)
        kl = gaussian_kl(mu, logvar)  # (B,)
        free_bits = self.hparams.free_bits
        return {"recon": recon, "kl": kl, "kl_train": free_bits_kl(mu, logvar, free_bits) if free_bits > 0 else kl}

    def kl_weight(self, step: int | None = None) -> float:
        """beta, ramped up linearly over ``kl_warmup_steps`` optimizer steps (at ``step``, default now)."""
        step = self.global_step if step is None else step
        warmup = self.hparams.kl_warmup_steps
        return self.hparams.beta * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def importance_weighted_bound(
        self, x_in: Tensor, target: Tensor, labels: Tensor | None, k: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """IWAE bound L_k on log p(x) in nats, (B,), from ``k`` posterior samples decoded in chunks (drawn with
        ``generator``, on x's device, if given)."""
        mu, logvar = self.encode(x_in, labels)  # (B, Z)
        log_px, log_pz, log_qz = [], [], []
        for start in range(0, k, self.hparams.iw_chunk):
            z = reparameterize(mu, logvar, generator, k=min(self.hparams.iw_chunk, k - start))  # (c, B, Z)
            c, b = z.shape[:2]
            chunk_labels = None if labels is None else self._labels(labels).repeat(c)  # (c*B,)
            params = self.decoder(z.reshape(c * b, -1), chunk_labels).reshape(c, b, *self.data_shape)
            log_px.append(log_likelihood(self.hparams.likelihood, params, target, self.log_scale))  # (c, B)
            log_pz.append(log_normal_std(z))  # (c, B)
            log_qz.append(log_normal(z, mu, logvar))  # (c, B)
        return iw_bound(torch.cat(log_px), torch.cat(log_pz), torch.cat(log_qz))  # (B,)

    def nll(self, x: Tensor, labels: Tensor | None = None, k: int | None = None, batch_idx: int = 0) -> Tensor:
        """The test NLL bound in nats per example (B,) of model-space x: the negative IW bound with ``k`` samples
        (default ``iw_samples``; k=1 gives the negative ELBO). Binarization (Bernoulli) and the posterior samples are
        drawn as for test batch ``batch_idx``: the same every time, so scores and figures compare across runs."""
        x_in, target = self.prepare(x, "test", batch_idx)
        generator = torch.Generator(device=x.device).manual_seed(7_919 * batch_idx + 3)
        return -self.importance_weighted_bound(x_in, target, labels, k or self.hparams.iw_samples, generator)

    # ------------------------------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Minimise recon + kl_weight * KL (free bits applied); log ELBO terms in nats and bits/dim."""
        x, y = batch
        terms = self.elbo_terms(*self.prepare(x, "train"), y if self.conditional else None)
        loss = (terms["recon"] + self.kl_weight() * terms["kl_train"]).mean()
        summaries = self._summaries(terms)
        if not self.loss_is_finite(loss, recon=summaries["recon"], kl=summaries["kl"]):
            return None
        self.log_train_step(**summaries)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """ELBO terms on held-out data (single-sample estimates)."""
        x, y = batch
        terms = self.elbo_terms(*self.prepare(x, "val", batch_idx), y if self.conditional else None)
        values = {f"val/{k}": v for k, v in self._summaries(terms).items()}
        self.log_dict(values, sync_dist=True, batch_size=x.shape[0])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``test/nll`` (IW bound, k=iw_samples) in nats and bits/dim, the ELBO, and the anomaly AUROCs."""
        x, y = batch
        labels = y if self.conditional else None
        nll = self.nll(x, labels, batch_idx=batch_idx)  # (B,)
        terms = self.elbo_terms(*self.prepare(x, "test", batch_idx), labels)
        values = {
            "test/nll": nll.mean(),
            "test/nll_bits_per_dim": self._bits_per_dim(nll).mean(),
            "test/elbo": -(terms["recon"] + terms["kl"]).mean(),
        }
        self.log_dict(values, sync_dist=True, batch_size=x.shape[0])
        self.log_anomaly_aurocs(x, y, nll, batch_idx)

    def predict_step(self, batch, batch_idx: int = 0):
        """Samples for a sample request (as every family); per-example NLL bounds (the raw anomaly score) for a
        batch of data."""
        if is_sample_request(batch):
            return super().predict_step(batch, batch_idx)
        x, y = batch
        return self.nll(x, y if self.conditional else None)

    def _summaries(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        recon, kl = terms["recon"].mean(), terms["kl"].mean()  # bits/dim is affine: the mean's = the means'
        return {"elbo": -(recon + kl), "recon": recon, "kl": kl, "bits_per_dim": self._bits_per_dim(recon + kl)}

    def _bits_per_dim(self, nats: Tensor) -> Tensor:
        return bits_per_dim(nats, self.num_dims, self.dequantization)


def _check_options(latent_dim, gaussian_scale, beta, iw_samples, iw_chunk) -> None:
    if latent_dim < 1 or iw_samples < 1 or iw_chunk < 1:
        raise ValueError("latent_dim, iw_samples and iw_chunk must be >= 1")
    if gaussian_scale <= 0 or beta < 0:
        raise ValueError(f"gaussian_scale must be > 0 and beta >= 0, got {gaussian_scale} and {beta}")
