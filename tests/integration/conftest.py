"""Integration tests run from a directory holding a small MNIST evaluator at runs/evaluators/mnist_classifier,
where the MNIST experiments' SampleQualityMonitor looks for it (as it does from a user's checkout)."""

import os

import pytest

from tests.integration.helpers import fit, mnist_args


@pytest.fixture(scope="session", autouse=True)
def evaluator_home(tmp_path_factory, request):
    """Train the evaluator for a few steps once per session and run every integration test beside it."""
    value = os.environ.get("GENLIT_DATA_DIR")
    if not value:
        yield None
        return
    home = tmp_path_factory.mktemp("home")
    root = home / "runs" / "evaluators" / "mnist_classifier"
    overrides = ["--trainer.max_steps", "60", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    fit("evaluators/mnist_classifier.yaml", root, *mnist_args(os.path.join(value, "mnist")), *overrides)
    previous = os.getcwd()
    os.chdir(home)
    yield home
    os.chdir(previous)
