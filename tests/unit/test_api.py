"""The Python API's own pieces: finding a config from any folder, keyword overrides as command-line arguments,
showing samples (images, points, texts, .npz), loading a run folder, and one clear error each."""

import numpy as np
import pytest
import torch

from genlit.api import REPO, config_path, evaluate, fit, load, override_args, show


def test_a_config_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("experiments/gan/toy_ring8.yaml") == REPO / "experiments/gan/toy_ring8.yaml"
    assert config_path("gan/toy_ring8.yaml") == REPO / "experiments/gan/toy_ring8.yaml"
    with pytest.raises(FileNotFoundError, match="no experiment config 'gan/nope.yaml'; give a YAML path"):
        config_path("gan/nope.yaml")


def test_keyword_overrides_become_the_command_line_arguments():
    assert override_args("trainer", {"max_steps": 20, "logger": False, "precision": "bf16-mixed"}) == [
        "--trainer.max_steps=20",
        "--trainer.logger=false",
        "--trainer.precision=bf16-mixed",
    ]
    assert override_args("data", {"batch_size": 32, "held_out_classes": [1, 7]}) == [
        "--data.init_args.batch_size=32",
        "--data.init_args.held_out_classes=[1, 7]",
    ]
    assert override_args("model", {"net": {"n_layer": 2}, "class_path": "x.Y"}) == [
        "--model.init_args.net.n_layer=2",
        "--model.class_path=x.Y",
    ]


def test_show_draws_images_points_and_npz_and_prints_texts(tmp_path, capsys):
    images = show(torch.rand(6, 1, 8, 8) * 2 - 1, nrow=3, title="grid")
    assert images.axes[0].get_title() == "grid" and images.axes[0].images[0].get_array().shape == (2 + 2 * 10, 32)
    points = show(torch.randn(50, 2))
    assert len(points.axes[0].collections[0].get_offsets()) == 50
    np.savez(tmp_path / "s.npz", np.zeros((4, 8, 8, 3), np.uint8))
    assert show(str(tmp_path / "s.npz")).axes[0].images[0].get_array().shape[-1] == 3
    strip = show(torch.zeros(300, 1, 8, 8), nrow=100, size=5, max_images=200)  # two rows of the first 200
    assert strip.axes[0].images[0].get_array().shape == (2 + 2 * 10, 2 + 100 * 10)
    assert strip.get_size_inches()[0] == 5 and strip.get_size_inches()[1] < 1  # the grid's shape, not a square
    assert show(["first", "second"]) is None and "first\n" + "-" * 60 + "\nsecond" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"cannot show samples of shape \(5,\)"):
        show(torch.zeros(5))


def test_load_refuses_a_folder_without_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint or run folder at"):
        load(tmp_path / "missing.ckpt")


def test_fit_refuses_an_unknown_override_in_one_line_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unrecognized arguments: --trainer.max_stepz=3"):
        fit("gan/toy_ring8.yaml", trainer={"max_stepz": 3, "default_root_dir": str(tmp_path)})
    assert not any(tmp_path.iterdir())  # no run folder left behind


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: show(torch.zeros(4, 1, 8, 8), max_images=0), "show needs max_images >= 1 and size > 0"),
        (lambda: show(torch.zeros(4, 1, 8, 8), size=0), "show needs max_images >= 1 and size > 0"),
        (lambda: evaluate(torch.zeros(4, 1, 8, 8), "mnist", "inception", num=1), "num and kid_subset_size must be"),
        (lambda: evaluate("s.npz", "mnist", "inception", kid_subset_size=0), "num and kid_subset_size must be >= 2"),
    ],
)
def test_bad_numbers_are_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
