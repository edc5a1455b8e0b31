"""Concept Ablation's signature: K/V only by default, and the target prompt's prediction is
pulled onto the anchor prompt's prediction (model-based loss)."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.core import cache


def _gap(model, target: str, anchor: str) -> float:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, *model.latent_shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    with torch.no_grad():
        e_t = model.predict_noise(z, t, model.encode_prompt([target] * 8))
        e_a = model.predict_noise(z, t, model.encode_prompt([anchor] * 8))
    return float((e_t - e_a).pow(2).mean())


def test_default_changes_only_attn2_kv(tiny_model):
    run = gu.erase(tiny_model, "concept_ablation", "star", preset="smoke")
    names = set(run.result.changed)
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)


def test_model_based_loss_pulls_target_onto_anchor(tiny_model):
    task = gu.ErasureTask("star", anchor="circle")
    t, a = "a red star in flat style", "a red circle in flat style"
    before = _gap(tiny_model, t, a)
    run = gu.erase(tiny_model, "concept_ablation", task, preset="smoke", steps=25, lr=1e-2)
    after = _gap(run.model, t, a)
    assert after < 0.5 * before
    # an unrelated prompt pair is disturbed much less than the erased pair is pulled together
    u, v = "a blue ring in dotted style", "a blue heart in dotted style"
    assert abs(_gap(run.model, u, v) - _gap(tiny_model, u, v)) < before - after


def test_anchor_images_are_cached(tiny_model, monkeypatch):
    calls = []
    real = type(tiny_model).sample

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(type(tiny_model), "sample", counting)
    p = ["a green moon in wavy style"]
    first = cache.cached_sample(tiny_model, p, n=2, seed=11)
    n_calls = len(calls)
    second = cache.cached_sample(tiny_model, p, n=2, seed=11)
    assert torch.equal(first, second) and len(calls) == n_calls == 1


def test_anchor_of_another_kind_is_refused(tiny_model):
    import pytest

    with pytest.raises(gu.GenUnlearnError, match="must be of kind 'object'"):
        gu.erase(tiny_model, "concept_ablation", gu.ErasureTask("star", anchor="striped"))
