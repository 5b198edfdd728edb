"""GANMonitor: gradient norms, a mode-collapse check and a per-epoch loss table for GAN training.

What it watches:

- ``train/g_grad_norm`` / ``train/d_grad_norm``: the total 2-norm of each network's gradients just before
  its optimizer steps (after backward and AMP unscaling, before Lightning's gradient clipping), on the
  batches whose step metrics Lightning sends to the loggers (``log_every_n_steps``), so other batches pay
  nothing.
- ``train/sample_diversity``: mean pairwise L2 distance of fixed-noise samples over that of a real batch.
  A collapsed generator maps every z to (nearly) the same output, so the ratio falls towards 0
  (mode collapse: Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661, section 6; the
  minibatch-diversity view: Salimans et al. 2016, https://arxiv.org/abs/1606.03498).
- At the end of fit, a per-epoch table of the G and D losses and the discriminator's mean outputs
  D(x) and D(G(z)), which the GAN family logs as ``train/g_loss``, ``train/d_loss``, ``train/d_real`` and
  ``train/d_fake`` (on_step and on_epoch).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from genlit.callbacks.loggers import logger_step
from genlit.callbacks.sample_grid import StepCrossing, fixed_noise_samples
from genlit.families.protocols import Adversarial, Generative

# Table columns: (header, metric name logged by the GAN family).
_COLUMNS = (("g_loss", "train/g_loss"), ("d_loss", "train/d_loss"), ("D(x)", "train/d_real"))
_COLUMNS += (("D(G(z))", "train/d_fake"),)


def mean_pairwise_distance(x: Tensor) -> Tensor:
    """Mean L2 distance between all pairs of distinct rows of ``x`` (N, ...) flattened to (N, D); N >= 2."""
    if x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_distance needs at least 2 rows; got {x.shape[0]}")
    flat = x.detach().flatten(1).float()  # (N, D)
    dist = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")  # (N, N), zero diagonal
    n = flat.shape[0]
    return dist.sum() / (n * (n - 1))


def total_grad_norm(params: list[Tensor]) -> Tensor | None:
    """Total 2-norm of the gradients of ``params`` (as if concatenated), without a host sync; None if none."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    """The epoch mean of ``name`` from ``trainer.callback_metrics`` (``name_epoch`` or ``name``), if any."""
    for key in (f"{name}_epoch", name):
        if key in metrics:
            return float(metrics[key])
    return None


def _should_log_step_metrics(trainer: pl.Trainer) -> bool:
    """Whether this batch's step metrics reach the loggers (Lightning's own ``log_every_n_steps`` rule)."""
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None and hasattr(connector, "should_update_logs"):
        return bool(connector.should_update_logs)
    every = trainer.log_every_n_steps
    return every > 0 and trainer.global_step % every == 0


class GANMonitor(Callback):
    """Monitor GAN health: G/D gradient norms, fixed-noise sample diversity and a per-epoch loss table.

    The module must be a generative family with ``generator`` and ``discriminator`` sub-modules and one
    optimizer for each network (:class:`~genlit.families.protocols.Adversarial`, as
    :class:`genlit.families.gan.GAN`).

    Args:
        check_every_n_steps: period of the diversity check in optimizer steps (``trainer.global_step``);
            it also runs once when training ends.
        num_samples: fixed-noise samples per check, and real rows kept from the first training batch.
        collapse_threshold: warn ("possible mode collapse") when the diversity ratio is below this.
        seed: seed of the fixed noise.
        log_grad_norms: log ``train/g_grad_norm`` and ``train/d_grad_norm``.
    """

    def __init__(
        self,
        check_every_n_steps: int = 500,
        num_samples: int = 64,
        collapse_threshold: float = 0.25,
        seed: int = 0,
        log_grad_norms: bool = True,
    ) -> None:
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (diversity compares pairs); got {num_samples}")
        if not 0 <= collapse_threshold <= 1:
            raise ValueError(f"collapse_threshold is a ratio in [0, 1]; got {collapse_threshold}")
        self.num_samples = num_samples
        self.collapse_threshold = collapse_threshold
        self.seed = seed
        self.log_grad_norms = log_grad_norms
        self._trigger = StepCrossing(check_every_n_steps)
        self._real_diversity: Tensor | None = None
        self._generator_params: set[int] = set()
        self._discriminator_params: set[int] = set()
        self._epoch_last_batch = -1
        self._epoch_recorded = True
        self.rows: list[dict[str, Any]] = []
        self.diversity: list[tuple[int, float]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the module is a GAN and forget the previous fit's table (a resume reloads it afterwards)."""
        if not (isinstance(pl_module, Adversarial) and isinstance(pl_module, Generative)):
            raise ValueError(
                f"GANMonitor needs a GAN (a generative family with generator and discriminator networks); "
                f"got {type(pl_module).__name__}"
            )
        if stage == "fit":
            self.rows, self.diversity, self._real_diversity = [], [], None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Index the parameters of each network (after the strategy has wrapped the module)."""
        self._generator_params = {id(p) for p in pl_module.generator.parameters()}
        self._discriminator_params = {id(p) for p in pl_module.discriminator.parameters()}
        self._trigger.reset(trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Mark the epoch as not yet in the table."""
        self._epoch_recorded = False
        self._epoch_last_batch = -1

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Log the gradient norm of the network this optimizer steps (G or D), on logging batches only."""
        if not self.log_grad_norms or not _should_log_step_metrics(trainer):
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if not params:
            return
        if id(params[0]) in self._generator_params:
            role = "g"
        elif id(params[0]) in self._discriminator_params:
            role = "d"
        else:
            return
        norm = total_grad_norm(params)
        if norm is not None:
            pl_module.log(f"train/{role}_grad_norm", norm, on_step=True, on_epoch=False)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Measure the diversity of the first real batch (up to ``num_samples`` rows) once per fit."""
        if self._real_diversity is not None or not trainer.is_global_zero:
            return
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, *data_shape)
        if x.shape[0] >= 2:
            self._real_diversity = mean_pairwise_distance(x[: self.num_samples])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Run the diversity check when ``global_step`` crossed a multiple of ``check_every_n_steps``."""
        self._epoch_last_batch = batch_idx
        if self._trigger.crossed(trainer.global_step):
            self._check_diversity(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Add this epoch's mean losses and D outputs to the table (marked partial if max_steps cut it)."""
        total = trainer.num_training_batches  # inf for iterable datasets of unknown length
        self._record_row(trainer, partial=math.isfinite(total) and self._epoch_last_batch + 1 < total)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run a last diversity check unless one just ran at this step."""
        if self._trigger.final(trainer.global_step):
            self._check_diversity(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the per-epoch loss table (rank zero), adding an epoch cut short if it was not recorded."""
        if not self._epoch_recorded and self._epoch_last_batch >= 0:
            self._record_row(trainer, partial=True)
        if trainer.is_global_zero and self.rows:
            print(self.format_table())

    def _record_row(self, trainer: pl.Trainer, partial: bool) -> None:
        """Append (epoch, g_loss, d_loss, D(x), D(G(z))) read from ``trainer.callback_metrics``."""
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "partial": partial}
        row.update({header: _metric(metrics, name) for header, name in _COLUMNS})
        self.rows.append(row)
        self._epoch_recorded = True

    def format_table(self) -> str:
        """The table as plain text: one line per epoch, blanks for missing values, ``*`` marks a cut epoch."""
        lines = ["GAN training per epoch (epoch means; * = epoch cut short)"]
        lines.append(f"{'epoch':>6} " + " ".join(f"{header:>10}" for header, _ in _COLUMNS))
        for row in self.rows:
            cells = [f"{row[h]:>10.4f}" if row[h] is not None else " " * 10 for h, _ in _COLUMNS]
            epoch = f"{row['epoch']}{'*' if row['partial'] else ''}"
            lines.append(f"{epoch:>6} " + " ".join(cells))
        return "\n".join(lines)

    def _check_diversity(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Sample on fixed noise, log the diversity ratio, warn below ``collapse_threshold`` (rank zero)."""
        if not trainer.is_global_zero or self._real_diversity is None or self._real_diversity.item() <= 0:
            return
        # the generator being trained, not its EMA: the EMA lags behind and averages over recent weights
        samples = fixed_noise_samples(pl_module, self.num_samples, self.seed, use_ema=False)
        ratio = (mean_pairwise_distance(samples) / self._real_diversity.to(samples.device)).item()
        self.diversity.append((trainer.global_step, ratio))
        for logger in trainer.loggers:  # direct: a check need not fall on a log_every_n_steps batch
            logger.log_metrics({"train/sample_diversity": ratio}, step=logger_step(trainer))
        if ratio < self.collapse_threshold:
            rank_zero_warn(
                f"possible mode collapse at step {trainer.global_step}: fixed-noise samples have {ratio:.1%} "
                f"of the data's diversity (threshold {self.collapse_threshold:.0%})"
            )

    def state_dict(self) -> dict[str, Any]:
        """Keep the table across a resume."""
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the table saved by :meth:`state_dict`."""
        self.rows = list(state_dict.get("rows", []))
