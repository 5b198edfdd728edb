"""Callbacks the fault-tolerance tests add from the command line: kill the process, record the end state."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import torch


class KillAt(L.Callback):
    """``kill -9`` this process once ``global_step`` reaches ``step`` (at the end of that batch); the step it
    was killed at goes to the file ``record`` when given."""

    def __init__(self, step: int, record: str | None = None) -> None:
        self.step, self.record = step, record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            if self.record:
                Path(self.record).write_text(str(trainer.global_step))
            os.kill(os.getpid(), signal.SIGKILL)


class SaveEndState(L.Callback):
    """Write ``<name>.pt`` (the module's state dict) and ``<name>.json`` (the logged metrics, the step) at the
    end of fit."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.path.with_suffix(".pt"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        record = {"metrics": metrics, "global_step": trainer.global_step, "run_dir": trainer.default_root_dir}
        self.path.with_suffix(".json").write_text(json.dumps(record))


class SignalAt(L.Callback):
    """Send ``signal_name`` (e.g. SIGUSR1, SLURM's warning before the time limit) to this process once, when
    ``global_step`` reaches ``step``."""

    def __init__(self, step: int, signal_name: str = "SIGUSR1", record: str | None = None) -> None:
        self.step, self.signal, self.sent, self.record = step, getattr(signal, signal_name), False, record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            if self.record:
                Path(self.record).write_text(str(trainer.global_step))
            os.kill(os.getpid(), self.signal)


class TouchAt(L.Callback):
    """Create the file ``path`` once ``global_step`` reaches ``step`` (a test waits for it to act mid-run)."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.path.exists():
            self.path.touch()
