"""TextSamples: save and log what a language model writes as it trains."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from genlit.callbacks.sample_grid import PeriodicPicture, logger_step
from genlit.families.token_sampling import check_sampling_options


class TextSamples(PeriodicPicture):
    """Write ``<run_dir>/samples/step_{global_step:07d}.txt`` with continuations of ``prompt`` and log them.

    Every ``every_n_steps`` optimizer steps and once when training ends (rank zero only), the module's
    ``sample(num_samples, prompt=..., max_new_tokens=..., generator=...)`` runs with a freshly seeded generator,
    so successive files show the same draws as the model improves. W&B gets a table (``samples/text``),
    TensorBoard a text entry.

    Args:
        prompt: the text continued (must encode with the model's tokenizer).
        num_samples: continuations per step.
        max_new_tokens: tokens generated per continuation.
        temperature / top_k / top_p: sampling options, as for ``genlit sample``.
        every_n_steps: period in optimizer steps.
        seed: seed of the draws.
    """

    def __init__(
        self,
        prompt: str = "\n",
        num_samples: int = 2,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        every_n_steps: int = 500,
        seed: int = 0,
    ) -> None:
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError(f"num_samples and max_new_tokens must be >= 1; got {num_samples}, {max_new_tokens}")
        check_sampling_options(temperature, top_k, top_p)
        super().__init__(every_n_steps)
        self.prompt, self.num_samples, self.max_new_tokens, self.seed = prompt, num_samples, max_new_tokens, seed
        self.options = {"temperature": temperature, "top_k": top_k, "top_p": top_p}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check before fitting that the module is a language model whose tokenizer encodes the prompt."""
        if stage == "fit" and not callable(getattr(pl_module, "encode_prompt", None)):
            raise ValueError(f"TextSamples needs a language model (AutoregressiveLM), got {type(pl_module).__name__}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fail early on a prompt the tokenizer cannot encode, then start counting steps."""
        pl_module.encode_prompt(self.prompt)
        super().on_train_start(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Generate, save the text file and log it (rank zero)."""
        if not trainer.is_global_zero:
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        texts = pl_module.sample(
            self.num_samples,
            prompt=self.prompt,
            max_new_tokens=self.max_new_tokens,
            generator=generator,
            **self.options,
        )
        path = Path(self._run_dir or trainer.default_root_dir) / "samples" / f"step_{trainer.global_step:07d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
        self.saved.append(path)
        step = logger_step(trainer)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text("samples/text", columns=["step", "text"], data=[[step, t] for t in texts], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples/text", "\n\n---\n\n".join(texts), step)
