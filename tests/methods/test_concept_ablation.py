"""Concept Ablation's signature: K/V only by default, and the target prompt's prediction is
pulled onto the anchor prompt's prediction (model-based loss)."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core import cache
from genunlearn.methods import concept_ablation


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
    run = gu.erase(
        tiny_model, "concept_ablation", task, preset="smoke", steps=25, lr=1e-2, scale_lr=False
    )
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
    with pytest.raises(gu.GenUnlearnError, match="must be of kind 'object'"):
        gu.erase(tiny_model, "concept_ablation", gu.ErasureTask("star", anchor="striped"))


@pytest.mark.parametrize(("scale_lr", "batch_size"), [(True, 2), (True, 3), (False, 3)])
def test_learning_rate_is_scaled_by_the_batch_as_in_the_official_code(
    tiny_model, monkeypatch, scale_lr, batch_size
):
    seen = {}
    real = concept_ablation.finetune

    def recording(params, loss_fn, steps, lr, **kw):
        seen["lr"] = lr
        return real(params, loss_fn, steps, lr, **kw)

    monkeypatch.setattr(concept_ablation, "finetune", recording)
    run = gu.erase(
        tiny_model, "concept_ablation", "star", preset="smoke", lr=1e-4, scale_lr=scale_lr,
        batch_size=batch_size,
    )  # fmt: skip
    want = 1e-4 * batch_size if scale_lr else 1e-4
    assert seen["lr"] == pytest.approx(want) and run.result.info["lr"] == pytest.approx(want)


def test_paper_preset_trains_at_the_scaled_official_rate():
    cfg = concept_ablation.ConceptAblationConfig()
    assert cfg.scale_lr and cfg.lr * cfg.batch_size == pytest.approx(2e-6 * 4)


def _second_difference(model, monkeypatch, shifted: list[str], **kw) -> float:
    """(L(1) + L(-1)) / 2 - L(0) of the first loss, where every prediction for a prompt in
    ``shifted`` is moved by s: 1 if those predictions make the whole target, 0 if unused."""
    real = type(model).predict_noise
    emb = model.encode_prompt(shifted)
    losses = []
    for s in (1.0, 0.0, -1.0):

        def moved(self, x_t, t, cond, s=s):
            y = real(self, x_t, t, cond)
            hit = (cond.unsqueeze(1) == emb.unsqueeze(0)).flatten(2).all(2).any(1)
            return y + s * hit.float().view(-1, 1, 1, 1)

        monkeypatch.setattr(type(model), "predict_noise", moved)
        run = gu.erase(model, "concept_ablation", "star", preset="smoke", seed=0, steps=1, **kw)
        losses.append(run.result.info["first_loss"])
    monkeypatch.setattr(type(model), "predict_noise", real)
    return (losses[0] + losses[2]) / 2 - losses[1]


def test_model_based_target_is_the_anchor_captions_prediction(tiny_model, monkeypatch):
    """Moving every anchor-caption prediction by s moves the model-based target by s, and the
    noise-based target not at all; the trained prediction is the target caption's."""
    from genunlearn.core.concept_sets import anchor_pairs

    anchors, targets, _ = anchor_pairs(tiny_model, gu.ErasureTask("star"), "concept_ablation")
    assert _second_difference(tiny_model, monkeypatch, anchors) == pytest.approx(1.0, rel=1e-4)
    noise = _second_difference(tiny_model, monkeypatch, anchors, loss_type="noise")
    assert noise == pytest.approx(0.0, abs=1e-5)

    seen = []
    real = type(tiny_model).predict_noise

    def recording(self, x_t, t, cond):
        if torch.is_grad_enabled():  # the trained prediction (the target is under no_grad)
            seen.append(cond.detach().clone())
        return real(self, x_t, t, cond)

    monkeypatch.setattr(type(tiny_model), "predict_noise", recording)
    gu.erase(tiny_model, "concept_ablation", "star", preset="smoke", seed=0, steps=1)
    emb_t = tiny_model.encode_prompt(targets)
    assert len(seen) == 1
    assert all(any(torch.equal(row, e) for e in emb_t) for row in seen[0])
