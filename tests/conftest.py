"""Shared fixtures: a tiny trained-from-scratch testbed (seconds) used by contract and pipeline tests.

The tiny testbed goes through the real recipe (render -> evaluator -> VAE -> UNet -> export) with
shrunk step counts, so it has the same structure as toy-sd (world.json, evaluator, tokenizer) but
random-quality weights; tests on it check mechanics, never quality.
"""

from __future__ import annotations

import json
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
    """Path of a tiny toy pipeline directory (ToyCanvas world, evaluator inside)."""
    from genunlearn.models.toy import TrainRecipe, train_testbed

    out = tmp_path_factory.mktemp("tiny_testbed")
    recipe = TrainRecipe(
        n_images=300, evaluator_steps=20, vae_steps=4, unet_steps=4, checkpoint_every=2
    )
    path = train_testbed(out, recipe, progress=False)
    # fast sampling for every test that loads the tiny testbed by path (CLI, bench)
    world = json.loads((path / "world.json").read_text())
    world["sampling"] = {"steps": 2, "guidance": 3.0}
    (path / "world.json").write_text(json.dumps(world))
    return path


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
