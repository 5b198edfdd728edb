"""Progressive growing through ``genlit fit`` (experiments/gan/progan_mnist.yaml with tiny nets): a run stopped in
the middle of a fade-in and resumed with ``--ckpt_path last`` continues at the same resolution and alpha, and ends
where the uninterrupted run ends; a bad schedule is one clear error line."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from genlit.cli import main
from genlit.commands.runs import newest_checkpoint
from tests.integration.helpers import FAST, fit, mnist_args
from tests.integration.test_errors import fit_args, genlit_error

NETS = "--model.init_args.{}.init_args.{}"


def overrides(mnist_dir: Path, max_steps: int) -> list[str]:
    """Tiny nets growing 7 -> 14 -> 28 px on 64 + 160 images per phase, batch 16; no callbacks but checkpoints."""
    args = [*mnist_args(mnist_dir), "--data.init_args.batch_size", "16", "--trainer.max_steps", str(max_steps),
            "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
            "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
            "init_args: {save_last: true, save_top_k: 0}}]"]  # fmt: skip
    sizes = {"generator": {"latent_dim": 16, "w_dim": 16, "mapping_layers": 2, "channels": 4, "max_channels": 8},
             "discriminator": {"channels": 4, "max_channels": 8}}  # fmt: skip
    for net, init_args in sizes.items():
        init_args = {**init_args, "growth.init_args.fade_images": 160, "growth.init_args.stable_images": 64}
        args += [arg for key, value in init_args.items() for arg in (NETS.format(net, key), str(value))]
    return args


class GrowthProbe(L.Callback):
    """Write ``(resolution, alpha)`` of G, D and G's EMA copy, and their image counts, at the start and the end of
    training to the JSON file ``path``."""

    def __init__(self, path: str) -> None:
        self.path, self.record = Path(path), {}

    def _note(self, when: str, module) -> None:
        nets = {"G": module.generator, "D": module.discriminator, "EMA": module.ema.module}
        self.record[when] = {k: [*net.growth_state(), int(net.growth_clock.images)] for k, net in nets.items()}

    def on_train_start(self, trainer, pl_module) -> None:
        self._note("start", pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._note("end", pl_module)
        self.path.write_text(json.dumps(self.record))


def probe(path: Path) -> str:
    """The command-line flag that adds a :class:`GrowthProbe` writing to ``path``."""
    init = {"class_path": f"{__name__}.GrowthProbe", "init_args": {"path": str(path)}}
    return "--trainer.callbacks+=" + json.dumps(init)


def test_a_run_stopped_mid_fade_resumes_with_the_same_level_and_alpha(tmp_path, mnist_dir):
    whole = fit("gan/progan_mnist.yaml", tmp_path / "whole", *overrides(mnist_dir, 40))  # 20 batches: 320 images
    run = fit("gan/progan_mnist.yaml", tmp_path / "runs", *overrides(mnist_dir, 16))  # 8 batches: 128 images
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for net in ("generator", "discriminator", "ema.module"):
        assert int(last[f"{net}.growth_clock.images"]) == 128  # 64 at 7 px, then 64 of the 160 fading in 14 px

    record = tmp_path / "growth.json"
    main(["fit", "--config", str(run / "config.yaml"), "--trainer.default_root_dir", str(tmp_path / "runs"), *FAST,
          "--trainer.max_steps", "40", probe(record), "--ckpt_path", "last"])  # fmt: skip
    states = json.loads(record.read_text())
    for net in ("G", "D", "EMA"):
        assert states["start"][net] == [14, 0.4, 128], states  # resumed mid-fade, where it stopped
        assert states["end"][net] == [28, 0.2, 320], states  # 320 - 64 - 224: 32 of the 160 fading in 28 px

    got = torch.load(newest_checkpoint(run), weights_only=True)["state_dict"]
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{key} differs from the uninterrupted run")


def test_a_start_resolution_off_the_ladder_is_one_clear_line(capsys, tmp_path, mnist_dir):
    growth = NETS.format("discriminator", "growth.init_args.start_resolution")
    line = genlit_error(capsys, fit_args("gan/progan_mnist.yaml", tmp_path, *mnist_args(mnist_dir), growth, "16"))
    assert "start_resolution 16" in line and "StyleGANDiscriminator" in line and "7, 14, 28" in line
    assert not [p for p in tmp_path.rglob("*.ckpt")]
