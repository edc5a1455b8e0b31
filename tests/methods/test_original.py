"""original: the reference row. Its whole contract is that nothing changes, end to end."""

from __future__ import annotations

import torch

import genunlearn as gu


def test_original_changes_nothing_and_round_trips(tiny_model, tmp_path):
    run = gu.erase(tiny_model, "original", "star", tmp_path / "r", preset="smoke", samples=False)
    assert run.result.changed == {} and run.result.inference == {} and run.result.addon is None
    loaded = gu.load_run(run.path, model=tiny_model)
    assert loaded.weights_fingerprint() == tiny_model.weights_fingerprint()
    p = ["a red star in striped style"]
    assert torch.equal(loaded.sample(p, n=1, seed=3), tiny_model.sample(p, n=1, seed=3))
