"""Evaluators found or made on first use (genlit.metrics.evaluators): the cache key, found vs made, one training
under concurrency, and the clear errors. Training is faked here (a few bytes); tests/integration/test_evaluate_cli.py
trains for real (and relays a failed training's error)."""

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from genlit.cli import main
from genlit.files import cache_root
from genlit.metrics.evaluators import ARGS_ENV, CONFIGS, evaluator, find_or_train
from genlit.metrics.extractors import make_extractor

SPEC = "evaluator:mnist_classifier"
SHIPPED = CONFIGS / "mnist_classifier.yaml"


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A local dataset folder (only its path matters to the cache)."""
    path = tmp_path / "mnist"
    path.mkdir()
    return path


def fake_train(entry) -> Path:
    """Stands in for ``genlit fit``: a moment's work, one line in ``trainings.txt``, a small 'checkpoint'."""
    time.sleep(0.5)
    with open(entry.folder / "trainings.txt", "a") as log:
        log.write(f"{entry.key}\n")
    entry.work.mkdir(parents=True, exist_ok=True)
    (entry.work / "last.ckpt").write_bytes(b"weights of " + entry.key.encode())
    return entry.work / "last.ckpt"


def trainings(folder: Path) -> int:
    path = folder / "trainings.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ------------------------------------------------------------------------------------------------ the key
def test_the_key_is_stable_for_the_same_evaluator_and_data(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv(ARGS_ENV, raising=False)
    first = evaluator(SPEC, str(dataset), tmp_path / "a")
    assert evaluator(SPEC, str(dataset), tmp_path / "b").key == first.key  # the cache folder is not part of it
    monkeypatch.chdir(dataset.parent)
    assert evaluator(SPEC, "mnist").key == first.key  # a relative path names the same data
    assert evaluator(str(SHIPPED), str(dataset)).key == first.key  # the config by path is the same config
    assert first.dataset == str(dataset.resolve()) and first.split == "train" and len(first.key) == 16
    reworded = tmp_path / "commented.yaml"
    reworded.write_text("# a new comment\n\n" + SHIPPED.read_text().replace("# genlit's MNIST", "# genlit's own MNIST"))
    assert evaluator(str(reworded), str(dataset)).key == first.key  # comments and blank lines are not the recipe


def test_the_key_changes_with_the_recipe_the_data_and_the_training_options(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv(ARGS_ENV, raising=False)
    base = evaluator(SPEC, str(dataset)).key
    other_lr = tmp_path / "other_lr.yaml"
    other_lr.write_text(SHIPPED.read_text().replace("lr: 0.001", "lr: 0.002"))
    other_split = tmp_path / "other_split.yaml"
    other_split.write_text(SHIPPED.read_text().replace("batch_size: 128,", "batch_size: 128, train_split: extra,"))
    other_data = tmp_path / "fashion"
    other_data.mkdir()
    keys = [
        evaluator(str(other_lr), str(dataset)).key,
        evaluator(str(other_split), str(dataset)).key,
        evaluator(SPEC, str(other_data)).key,
        evaluator(SPEC, "ylecun/mnist").key,  # a Hub id
    ]
    monkeypatch.setenv(ARGS_ENV, "--trainer.max_steps 60")
    quick = evaluator(SPEC, str(dataset))
    assert quick.train_args == ("--trainer.max_steps", "60")
    assert len({base, *keys, quick.key}) == 6


def test_the_cache_root_follows_genlit_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "genlit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "genlit"
    monkeypatch.setenv("GENLIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert evaluator(SPEC, "ylecun/mnist").folder == tmp_path / "mine" / "evaluators"


# ------------------------------------------------------------------------------------------ found vs made
def test_the_first_call_trains_and_says_so_the_second_finds_it_silently(dataset, tmp_path, capsys):
    entry = evaluator(SPEC, str(dataset), tmp_path / "cache")
    made = find_or_train(entry, train=fake_train)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "training the evaluator mnist_classifier once" in lines[0] and str(made) in lines[0]
    assert made == entry.checkpoint and made.read_bytes() == b"weights of " + entry.key.encode()
    record = json.loads(entry.record.read_text())
    assert record["dataset"] == str(dataset.resolve()) and record["seconds"] >= 0.5 and not entry.work.exists()

    found = find_or_train(evaluator(SPEC, str(dataset), tmp_path / "cache"), train=fake_train)
    assert found == made and trainings(entry.folder) == 1 and capsys.readouterr().out == ""


def test_a_failed_training_publishes_nothing_and_the_next_call_trains(dataset, tmp_path):
    entry = evaluator(SPEC, str(dataset), tmp_path / "cache")

    def fails(entry):
        (entry.work / "run").mkdir(parents=True)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        find_or_train(entry, train=fails)
    assert not entry.checkpoint.exists() and not entry.record.exists()
    assert find_or_train(entry, train=fake_train).is_file() and trainings(entry.folder) == 1


# ----------------------------------------------------------------------------------------------- the lock
def _resolve(cache: str, dataset: str, start, results) -> None:
    """One process of the race: wait for the other, then find or train."""
    start.wait()
    results.put(str(find_or_train(evaluator(SPEC, dataset, cache), train=fake_train)))


def test_two_processes_at_once_train_once(dataset, tmp_path):
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_resolve, args=(str(tmp_path / "c"), str(dataset), start, results))
                 for _ in range(2)]  # fmt: skip
    for process in processes:
        process.start()
    paths = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    entry = evaluator(SPEC, str(dataset), tmp_path / "c")
    assert paths == [str(entry.checkpoint)] * 2 and trainings(entry.folder) == 1
    assert entry.checkpoint.read_bytes() == b"weights of " + entry.key.encode()


# --------------------------------------------------------------------------------------------- the errors
def test_an_evaluator_without_its_dataset_or_an_unknown_one_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is trained on the dataset it measures; give it"):
        make_extractor(SPEC)
    with pytest.raises(ValueError, match="unknown evaluator 'evaluator:cifar'; use one of evaluator:mnist_classifier"):
        evaluator("evaluator:cifar", "ylecun/mnist")
    with pytest.raises(FileNotFoundError, match="evaluator config nowhere.yaml does not exist"):
        evaluator("nowhere.yaml", "ylecun/mnist")
    from genlit.callbacks.sample_quality import SampleQualityMonitor

    with pytest.raises(ValueError, match="unknown evaluator 'evaluator:mnist'"):  # when the config is read
        SampleQualityMonitor("evaluator:mnist")


@pytest.mark.parametrize("option", ["--data", "--extractor-data"])
def test_evaluate_with_a_missing_dataset_says_so_in_one_line_and_trains_nothing(option, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENLIT_CACHE_DIR", str(tmp_path / "cache"))
    np.savez(tmp_path / "s.npz", np.zeros((4, 28, 28, 1), np.uint8))
    missing = str(tmp_path / "no_mnist")
    data = ["--data", missing] if option == "--data" else ["--data", str(tmp_path), option, missing]
    with pytest.raises(SystemExit):
        main(["evaluate", "--samples", str(tmp_path / "s.npz"), "--extractor", SPEC, *data])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genlit: error: ")]
    assert len(lines) == 1 and f"does not exist; point {option} at an existing directory" in lines[0], lines
    assert not (tmp_path / "cache").exists()
