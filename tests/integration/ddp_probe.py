"""A callback the DDP test adds from the command line: each rank saves its generator weights at the end."""

import hashlib
import json
from pathlib import Path

import lightning as L
import torch


class SaveGeneratorWeights(L.Callback):
    """Write ``rank{R}.pt`` with the generator's, discriminator's and EMA's state dicts (buffers included)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        nets = {"generator": pl_module.generator, "discriminator": pl_module.discriminator, "ema": pl_module.ema}
        state = {name: net.state_dict() for name, net in nets.items()}
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


class RecordTrainImages(L.Callback):
    """Write ``rank{R}.json``: the global step at the end and a digest of every training image, by epoch."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        images = batch[0].detach().cpu().contiguous()  # (B, C, H, W)
        digests = [hashlib.sha1(image.numpy().tobytes()).hexdigest()[:16] for image in images]
        self.seen.setdefault(trainer.current_epoch, []).extend(digests)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {"global_step": trainer.global_step, "world_size": trainer.world_size, "seen": self.seen}
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
