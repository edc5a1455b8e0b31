"""Shared fixtures: a tiny random-weight testbed (seconds) used by contract and pipeline tests.

The tiny testbed (``testbed.tiny.build_random_testbed``) has toy-sd's structure (diffusers
pipeline with SD's module names, tokenizer, world.json with 2 sampling steps, evaluator) and
random weights; tests on it check mechanics, never quality. The real training recipe is covered
end to end by tests/pipeline/test_testbed_recipe.py.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# generated-image cache of the tests goes to a throw-away directory, never the user's cache
os.environ["GENUNLEARN_CACHE"] = tempfile.mkdtemp(prefix="genunlearn-test-cache-")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_testbed(tmp_path_factory):
    """Path of a tiny toy pipeline directory (ToyCanvas world, evaluator inside, 2-step sampling
    for every test that loads it by path: CLI, bench)."""
    from genunlearn.testbed.tiny import build_random_testbed

    return build_random_testbed(tmp_path_factory.mktemp("tiny_testbed") / "toy", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_testbed):
    """The tiny testbed loaded as an adapter, with fast sampling defaults."""
    import genunlearn as gu

    return gu.load_model(tiny_testbed)


def pytest_collection_modifyitems(config, items):
    """Skip slow efficacy tests when the trained toy-sd weights are not installed."""
    from genunlearn.models import assets_dir

    if (assets_dir() / "toy-sd" / "model_index.json").is_file():
        return
    skip = pytest.mark.skip(reason="trained toy-sd weights are not present under assets/")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
