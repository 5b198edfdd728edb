"""TextSamples: save and log what a language model writes as it trains."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from genlit.callbacks.loggers import log_texts
from genlit.callbacks.sample_grid import PeriodicPicture, fixed_noise_samples
from genlit.families.protocols import Generative, MaskFiller, TextModel


class TextSamples(PeriodicPicture):
    """Write ``<run_dir>/samples/step_{global_step:07d}.txt`` with continuations of ``prompt`` and log them.

    Every ``every_n_steps`` optimizer steps and once when training ends (rank zero only), the module draws
    samples 0..num_samples-1 under ``seed`` with ``sample(num_samples, prompt=..., max_new_tokens=..., ...)``,
    so successive files show the same draws as the model improves. W&B gets a table (``samples/text``),
    TensorBoard a text entry.

    Args:
        prompt: the text continued (must encode with the model's tokenizer).
        num_samples: continuations per step.
        max_new_tokens: tokens generated per continuation.
        temperature / top_k / top_p: sampling options, as for ``genlit sample``.
        steps: unmasking rounds of a masked language model, which fills the ``[MASK]`` tokens of ``prompt``
            (``max_new_tokens`` and ``top_p`` are a language model's and not passed to it).
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
        steps: int = 8,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        super().__init__(every_n_steps)
        self.num_samples, self.seed = num_samples, seed
        self.options = {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature,
                        "top_k": top_k, "top_p": top_p, "steps": steps}  # fmt: skip

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check before fitting that the module is a language model that takes these sampling options."""
        text = isinstance(pl_module, (TextModel, MaskFiller))
        if stage == "fit" and not (text and isinstance(pl_module, Generative)):
            raise ValueError(
                f"TextSamples needs a language model (AutoregressiveLM or MaskedLM), got {type(pl_module).__name__}"
            )
        if isinstance(pl_module, Generative):  # the options this family takes
            taken = pl_module.sample_options()
            self.options = {name: value for name, value in self.options.items() if name in taken}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Generative) -> None:
        """Fail early on options the model refuses (a prompt its tokenizer cannot encode), then count steps."""
        pl_module.check_sample_options(**self.options)
        super().on_train_start(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Generate, save the text file and log it (rank zero)."""
        if not trainer.is_global_zero:
            return
        texts = fixed_noise_samples(pl_module, self.num_samples, self.seed, **self.options)
        path = Path(self._run_dir or trainer.default_root_dir) / "samples" / f"step_{trainer.global_step:07d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
        self.saved.append(path)
        log_texts(trainer, "samples/text", texts)
