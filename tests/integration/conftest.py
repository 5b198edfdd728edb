"""Integration tests share one genlit cache for the session ($GENLIT_CACHE_DIR in a temporary folder) and run from
an empty folder. The MNIST experiments' SampleQualityMonitor (``extractor: evaluator:mnist_classifier``) trains its
evaluator into that cache on first use, through the same code as on a user's machine, but quick:
``$GENLIT_EVALUATOR_ARGS`` (60 steps) is part of the cache key, so the entry is the session's own."""

import pytest

from genlit.metrics.evaluators import ARGS_ENV, evaluator, find_or_train

QUICK_EVALUATOR = "--trainer.max_steps 60 --trainer.limit_val_batches 1"


@pytest.fixture(scope="session", autouse=True)
def genlit_cache(tmp_path_factory):
    """Point genlit's cache at a session folder and make first-use evaluators quick (child processes inherit
    both); run from an empty folder, so nothing a test writes by a relative path lands in the checkout."""
    patch = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("genlit_cache")
    patch.setenv("GENLIT_CACHE_DIR", str(cache))
    patch.setenv(ARGS_ENV, QUICK_EVALUATOR)
    patch.chdir(tmp_path_factory.mktemp("cwd"))
    yield cache
    patch.undo()


@pytest.fixture(scope="session")
def mnist_evaluator(genlit_cache, mnist_dir):
    """The session's MNIST evaluator checkpoint: found in the session cache, or trained there once."""
    return find_or_train(evaluator("evaluator:mnist_classifier", str(mnist_dir)))
