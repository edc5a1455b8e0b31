"""Contract tests over every registered attack and metric family on the tiny testbed."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn import registry


def _attack(model, attack, concept, **kw):
    """Attack with the attack's 'smoke' preset (shrunk settings; every attack has one)."""
    preset = "smoke"
    return gu.attack(model, attack, concept, preset=preset, **kw)


@pytest.mark.parametrize("attack", gu.list_attacks())
def test_attack_bookkeeping_and_determinism(attack, tiny_model):
    a = _attack(tiny_model, attack, "circle", original=tiny_model, n_prompts=4)
    b = _attack(tiny_model, attack, "circle", original=tiny_model, n_prompts=4)
    assert len(a.prompts) == len(a.adversarial_prompts) == len(a.success) == 4
    assert all("circle" in p for p in a.prompts)
    assert 0.0 <= a.pre_asr <= a.asr <= 1.0
    assert a.success == b.success and a.adversarial_prompts == b.adversarial_prompts
    assert torch.equal(a.images, b.images)
    assert a.images.shape[0] == 4


def test_fidelity_and_unlearncanvas_are_fractions(tiny_model):
    fid = gu.evaluate(tiny_model, protocol="fidelity", n_per_prompt=1)
    assert fid["n_prompts"] == 80 and fid["n_images"] == 80
    for k in ("object_acc", "style_acc", "colour_acc"):
        assert 0.0 <= fid[k] <= 1.0
    uc = gu.evaluate(tiny_model, "dotted", protocol="unlearncanvas", n_per_prompt=1)
    for k in ("ua", "ira", "cra", "cra_object", "cra_colour"):
        assert 0.0 <= uc[k] <= 1.0
    assert uc["n_target_images"] == 10 and uc["n_retain_images"] == 70
    assert uc["fid"] >= 0.0


def test_unlearncanvas_ua_matches_its_definition(tiny_model, monkeypatch):
    """UA counts target images NOT labelled as the target: force the evaluator's answers."""
    ev = tiny_model.evaluator
    real_predict = ev.predict

    def always_star(images, batch_size=256):
        out = real_predict(images, batch_size)
        out["object"] = ["star"] * len(images)
        return out

    monkeypatch.setattr(ev, "predict", always_star)
    uc = gu.evaluate(tiny_model, "star", protocol="unlearncanvas", n_per_prompt=1, fid=False)
    assert uc["ua"] == 0.0  # every star image judged a star: nothing erased
    assert uc["ira"] == 0.0  # every non-star image judged a star: in-domain retention lost
    uc2 = gu.evaluate(tiny_model, "circle", protocol="unlearncanvas", n_per_prompt=1, fid=False)
    assert uc2["ua"] == 1.0


def test_target_cra_scores_the_other_heads_on_the_target_images(tiny_model, monkeypatch):
    """target_cra reads the target prompts' images only, cra the retain images only: spoiling
    the evaluator's object/colour answers on one split moves only that split's figure."""
    ev = tiny_model.evaluator
    real_predict = ev.predict
    kw = {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False}
    base = gu.evaluate(tiny_model, "dotted", **kw)

    def spoil(split):  # the protocol labels the target split first, then the retain split
        calls = []

        def predict(images, batch_size=256):
            out = real_predict(images, batch_size)
            calls.append(len(images))
            if len(calls) == split:
                out["colour"] = ["no-such-colour"] * len(images)
                out["object"] = ["no-such-object"] * len(images)
            return out

        return predict

    monkeypatch.setattr(ev, "predict", spoil(1))
    t = gu.evaluate(tiny_model, "dotted", **kw)
    assert t["target_cra"] == 0.0 and t["cra"] == base["cra"]
    monkeypatch.setattr(ev, "predict", spoil(2))
    r = gu.evaluate(tiny_model, "dotted", **kw)
    assert r["cra"] == 0.0 and r["target_cra"] == base["target_cra"] > 0.0


def test_protocol_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="Did you mean 'unlearncanvas'"):
        gu.evaluate(tiny_model, "star", protocol="unlearncanva")
    with pytest.raises(gu.GenUnlearnError, match="needs a task"):
        gu.evaluate(tiny_model, None, protocol="unlearncanvas")


@pytest.mark.parametrize("attack", gu.list_attacks())
def test_every_attack_has_its_own_test_file(attack):
    """Each attack's objective is pinned in tests/attacks/test_<name>.py (a test there breaks
    when the objective is swapped for a plausible wrong one); a new attack needs one too."""
    from pathlib import Path

    path = Path(__file__).parents[1] / "attacks" / f"test_{attack}.py"
    assert path.is_file(), f"attack {attack!r} has no {path.name} pinning its objective"
    assert {"paper", "toy", "smoke"} <= set(registry.get("attack", attack).presets)
