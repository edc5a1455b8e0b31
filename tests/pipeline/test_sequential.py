"""Sequential unlearning: steps chain erasures, and every step's figures follow their definitions."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.bench.sequential import step_rows


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_each_step_erases_from_the_previous_steps_model(tiny_model):
    before = _params(tiny_model)
    final, steps = gu.erase_sequence(
        tiny_model, "esd", ["star", "striped"], preset="smoke", seed=2, eval={"n_per_prompt": 1}
    )
    assert all(torch.equal(before[n], p) for n, p in _params(tiny_model).items())
    assert [s["step"] for s in steps] == [1, 2] and [s["erased"] for s in steps] == [
        "star",
        "striped",
    ]
    assert list(steps[0]["ua"]) == ["star"] and list(steps[1]["ua"]) == ["star", "striped"]
    one = gu.erase(tiny_model, "esd", "star", preset="smoke", seed=2).model
    two = gu.erase(one, "esd", "striped", preset="smoke", seed=2).model
    alone = gu.erase(tiny_model, "esd", "striped", preset="smoke", seed=2).model
    got, chained, single = _params(final), _params(two), _params(alone)
    assert all(torch.equal(got[n], chained[n]) for n in got)  # step 2 starts from step 1's model
    assert any(not torch.equal(got[n], single[n]) for n in got)  # ...not from the base model


def test_step_figures_match_their_definitions(tiny_model, monkeypatch):
    """Force the evaluator's answers (every object a star, every style flat, every colour red)
    and compare with the figures computed by hand from the grid."""
    ev = tiny_model.evaluator

    def fixed(images, batch_size=256):
        n = len(images)
        return {"object": ["star"] * n, "style": ["flat"] * n, "colour": ["red"] * n}

    monkeypatch.setattr(ev, "predict", fixed)
    _, steps = gu.erase_sequence(
        tiny_model, "original", ["star", "dotted"], eval={"n_per_prompt": 1}
    )
    grid = tiny_model.world.grid()
    s1, s2 = steps
    assert s1["ua"] == {"star": 0.0}  # every star image is judged a star: nothing erased
    assert s2["ua"] == {"star": 0.0, "dotted": 1.0}  # no dotted image is judged dotted
    assert s2["seq_ua"] == pytest.approx(0.5)
    retain1 = [g for g in grid if g["object"] != "star"]
    assert s1["n_retain_images"] == len(retain1) == 72
    assert s1["seq_ira"] == 0.0  # object head on non-star prompts: always wrong
    flat = sum(g["style"] == "flat" for g in retain1) / len(retain1)
    red = sum(g["colour"] == "red" for g in retain1) / len(retain1)
    assert s1["seq_cra"] == pytest.approx((flat + red) / 2)
    assert s1["seq_retain"] == pytest.approx((0.0 + flat + red) / 3)
    retain2 = [g for g in retain1 if g["style"] != "dotted"]
    assert s2["n_retain_images"] == len(retain2)
    flat2 = sum(g["style"] == "flat" for g in retain2) / len(retain2)
    red2 = sum(g["colour"] == "red" for g in retain2) / len(retain2)
    assert s2["seq_ira"] == pytest.approx((0.0 + flat2) / 2)  # object and style heads
    assert s2["seq_cra"] == pytest.approx(red2)
    rows = step_rows(steps, {"cell": "c", "model": "m", "method": "original", "label": "original"})
    concept_rows = [r for r in rows if r["metric"] == "seq_ua_concept"]
    assert [(r["step"], r["concept"]) for r in concept_rows] == [
        (1, "star"), (2, "star"), (2, "dotted")
    ]  # fmt: skip


def test_sequence_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="Did you mean 'striped'"):
        gu.erase_sequence(tiny_model, "original", ["star", "stripd"])
    with pytest.raises(gu.GenUnlearnError, match="repeat"):
        gu.erase_sequence(tiny_model, "original", ["star", "star"])
