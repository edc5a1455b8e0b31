"""All-but-One's signature: the target's guidance term moves onto the alternative's while the
unconditional prediction stays (nearly) where it was — and it is the constraint that keeps it."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.concept_sets import anchor_pairs


def _preds(model, prompts):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, *model.latent_shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    out = {}
    with torch.no_grad():
        for p in prompts:
            out[p] = model.predict_noise(z, t, model.encode_prompt([p] * 8))
    return out


def _drift(a, b):
    return float((a - b).pow(2).mean())


TARGET, ALT = "a red star in flat style", "a red heart in flat style"


@pytest.fixture(scope="module")
def runs(tiny_model):
    kw = {"preset": "smoke", "steps": 30, "lr": 1e-2, "n_images": 8, "batch_size": 4}
    task = gu.ErasureTask("star", anchor="heart")
    return (
        gu.erase(tiny_model, "all_but_one", task, **kw).model,
        gu.erase(tiny_model, "all_but_one", task, uncond_weight=0.0, **kw).model,
    )


def test_the_constraint_is_what_pins_the_unconditional_score(tiny_model, runs):
    erased, unconstrained = runs
    before = _preds(tiny_model, [""])[""]
    pinned = _drift(_preds(erased, [""])[""], before)
    free = _drift(_preds(unconstrained, [""])[""], before)
    assert pinned < 0.5 * free


def test_default_alternative_is_a_same_kind_neighbour(tiny_model):
    alts, targets, name = anchor_pairs(tiny_model, gu.ErasureTask("star"), "all_but_one")
    assert tiny_model.world.kind_of(name) == "object" and name != "star"
    assert all(t.replace("star", name) == a for a, t in zip(alts, targets, strict=True))
    assert (
        gu.erase(tiny_model, "all_but_one", "striped", preset="smoke").result.info["alternative"]
        in tiny_model.world.heads["style"]
    )


def test_bad_alternatives_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="must be of kind 'object'.*valid anchors"):
        gu.erase(tiny_model, "all_but_one", gu.ErasureTask("star", anchor="striped"))
    with pytest.raises(gu.GenUnlearnError, match="needs task.anchor"):
        gu.erase(tiny_model, "all_but_one", "a glowing lantern", preset="smoke")
