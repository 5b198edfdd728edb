"""Anomaly scoring for the likelihood families (VAE, PixelCNN, flow): one mixin, one set of scores, one AUROC.

``genlit test`` on a DataModule with ``held_out_classes`` (train on the normal classes, test on all) reports
``test/anomaly_auroc_<score>`` for every score the model can give (:mod:`genlit.metrics.anomaly`): ``nll``,
``complexity`` (PNG-corrected), ``reconstruction`` (models that reconstruct), and ``likelihood_ratio`` when the
model is given a background model, ``anomaly_background: PATH`` (Ren et al. 2019: the same family trained on
mutated inputs, ``--data.mutation_rate 0.2``; give it at test time: ``genlit test ... --model.anomaly_background
runs/.../last.ckpt``). :meth:`AnomalyScoring.anomaly_scores` scores any batch (``genlit evaluate --anomaly``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from genlit.checkpoints import load_family
from genlit.families.protocols import Reconstructs
from genlit.imaging import to_uint8
from genlit.metrics.anomaly import AnomalyAUROC, anomaly_scores, class_marginal, png_bits

_ESTIMATE_SETTINGS = ("iw_samples", "iw_chunk", "nll_samples")  # the background's estimate follows the model's
TRAINED_CLASSES_KEY = "genlit_trained_classes"  # a conditional model's checkpoint: the classes it was trained on


class AnomalyScoring:
    """Mixin of a likelihood family: per-example anomaly scores and their AUROC in ``test_step``.

    The family calls :meth:`init_anomaly_scoring` in ``__init__`` (after ``save_hyperparameters``, which records
    ``anomaly_background``) and :meth:`log_anomaly_aurocs` in ``test_step`` with the batch's NLLs. It offers
    ``nll(x, labels, batch_idx=...)`` (evaluation randomness such as binarization or dequantization seeded by
    ``batch_idx``, so the model and its background score the same binarized image), ``num_dims`` and
    ``conditional``.
    """

    def init_anomaly_scoring(self) -> None:
        """Create the AUROC metrics (child modules, so they follow the device and sync under DDP)."""
        self.anomaly_auroc = AnomalyAUROC()
        self._trained_classes: list[int] | None = None
        self._background_cache: list[nn.Module] = []  # a list keeps it out of the state_dict and the parameters

    def anomaly_scores(self, x: Tensor, nll: Tensor | None = None, batch_idx: int = 0) -> dict[str, Tensor]:
        """Per-example scores (B,) each, higher = more anomalous, of model-space images x (B, C, H, W):
        :func:`~genlit.metrics.anomaly.anomaly_scores`. ``nll`` (B,) is reused if the caller has it (the same
        ``batch_idx``). A conditional model never sees the images' labels (an anomaly's class is one it was not
        trained on): its NLL is the marginal over its trained classes, and it adds the class ambiguity."""
        ambiguity = labels = None
        if self.conditional:
            nll, ambiguity, labels = self._marginal_nll(self, x, batch_idx)
        elif nll is None:
            nll = self.nll(x, None, batch_idx=batch_idx)
        background = self.background_model()
        background_nll = None
        if background is not None:
            if background.conditional:
                background_nll = self._marginal_nll(background, x, batch_idx)[0]
            else:
                background_nll = background.nll(x, None, batch_idx=batch_idx)
        reconstruction = None
        if isinstance(self, Reconstructs):
            reconstruction = (self.reconstruct(x, labels) - x).square().flatten(1).mean(1)  # (B,)
        compressed = png_bits(*self.scored_images(x, batch_idx)).to(x.device)  # (B,) PNG length of what nll scores
        return anomaly_scores(
            nll, self.num_dims, background_nll=background_nll, compressed_bits=compressed,
            reconstruction_error=reconstruction, class_ambiguity=ambiguity,
        )  # fmt: skip

    def _marginal_nll(self, model, x: Tensor, batch_idx: int) -> tuple[Tensor, Tensor, Tensor]:
        """(the marginal NLL, the class ambiguity, the best class) (B,) each of a conditional ``model`` over this
        model's trained classes."""
        classes = torch.as_tensor(self.trained_classes(), device=x.device)  # (K,)
        if len(classes) < 2:
            raise ValueError(f"a conditional model scores anomalies over its trained classes; it has {len(classes)}")
        class_nll = torch.stack([model.nll(x, c.expand(len(x)), batch_idx=batch_idx) for c in classes])  # (K, B)
        nll, ambiguity = class_marginal(class_nll)
        return nll, ambiguity, classes[class_nll.argmin(0)]

    def trained_classes(self) -> list[int]:
        """The classes a conditional model was trained on: all but the DataModule's held-out classes (as recorded in
        its checkpoint when there is no DataModule), else all ``num_classes``."""
        held_out = self.held_out_classes()
        if not held_out and getattr(self, "_trained_classes", None) is not None:
            return list(self._trained_classes)
        return [c for c in range(self.num_classes) if c not in held_out]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Also record the classes the model was trained on (anomaly scoring without the DataModule)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[TRAINED_CLASSES_KEY] = self.trained_classes()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take back the trained classes (older checkpoints have none: all classes)."""
        super().on_load_checkpoint(checkpoint)
        self._trained_classes = checkpoint.get(TRAINED_CLASSES_KEY)

    def scored_images(self, x: Tensor, batch_idx: int = 0) -> tuple[Tensor, bool]:
        """The uint8 images (B, C, H, W) whose likelihood :meth:`nll` measures, and whether they are 0/1 (bilevel):
        the binarized test image under a Bernoulli likelihood (``prepare``'s target), else the 8-bit image. The
        complexity score compresses these, so both code lengths are of the same object."""
        if self.hparams.get("likelihood") == "bernoulli":
            return self.prepare(x, "test", batch_idx)[1].to(torch.uint8), True  # (B, C, H, W) in {0, 1}
        return to_uint8(x).permute(0, 3, 1, 2), False  # (B, C, H, W) in 0..255

    def log_anomaly_aurocs(self, x: Tensor, y: Tensor, nll: Tensor, batch_idx: int) -> None:
        """In ``test_step``: add the batch's scores to the AUROC of held-out classes against the rest and log
        ``test/anomaly_auroc_<score>``; nothing without held-out classes."""
        held_out = self.held_out_classes()
        if not held_out:
            return
        with torch.no_grad():
            scores = self.anomaly_scores(x, nll=nll, batch_idx=batch_idx)
        is_anomaly = torch.isin(y, torch.as_tensor(held_out, device=y.device))  # (B,)
        self.anomaly_auroc.add_scores(scores, is_anomaly)
        for name in scores:
            self.log(f"test/anomaly_auroc_{name}", self.anomaly_auroc[name], on_step=False, on_epoch=True)

    def held_out_classes(self) -> list[int]:
        """The classes the DataModule left out of training (its ``held_out_classes``), [] if none or no trainer."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        return list(getattr(datamodule, "held_out_classes", None) or [])

    def background_model(self) -> nn.Module | None:
        """The background model of ``anomaly_background`` (loaded once, eval mode, on this model's device), or
        None. It must be the same family on data of the same shape; its likelihood is estimated with the model's
        settings (``iw_samples``, ``nll_samples``)."""
        path = self.hparams.get("anomaly_background")
        if not path:
            return None
        if not self._background_cache:
            if not Path(path).is_file():
                raise FileNotFoundError(f"anomaly_background {path}: no such checkpoint; pass the background's .ckpt")
            background = load_family(path, needs="nll")
            if type(background) is not type(self) or tuple(background.data_shape) != tuple(self.data_shape):
                raise ValueError(
                    f"anomaly_background {path} holds a {type(background).__name__} of data {background.data_shape}; "
                    f"it must be a {type(self).__name__} of data {tuple(self.data_shape)} (--data.mutation_rate)"
                )
            self._background_cache.append(background.eval().requires_grad_(False))
        background = self._background_cache[0]
        for key in _ESTIMATE_SETTINGS:  # both likelihoods estimated alike (e.g. the same k of an IW bound)
            if key in self.hparams and key in background.hparams:
                background.hparams[key] = self.hparams[key]
        return background.to(self.device)
