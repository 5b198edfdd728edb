"""A callback the DDP test adds from the command line: each rank saves its generator weights at the end."""

from pathlib import Path

import lightning as L
import torch


class SaveGeneratorWeights(L.Callback):
    """Write ``rank{R}.pt`` with the generator's and EMA's state dicts into ``dirpath``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {"generator": pl_module.generator.state_dict(), "ema": pl_module.ema.state_dict()}
        torch.save({**state, "world_size": trainer.world_size}, self.dirpath / f"rank{trainer.global_rank}.pt")


class SaveNetWeights(L.Callback):
    """Write ``rank{R}.pt`` with ``pl_module.net``'s state dict, the validation metrics and the tokenizer."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        state = {"net": pl_module.net.state_dict(), "metrics": metrics, "tokenizer": pl_module.tokenizer.to_json()}
        torch.save({**state, "world_size": trainer.world_size}, self.dirpath / f"rank{trainer.global_rank}.pt")
