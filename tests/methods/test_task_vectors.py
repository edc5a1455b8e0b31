"""Task vectors' signature: the result is theta_0 - alpha (theta_ft - theta_0) on the tuned weights."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.methods.task_vectors import ema_decay_at


def _erase(model, **kw):
    return gu.erase(model, "task_vectors", "star", preset="smoke", seed=0, **kw)


def test_result_is_the_negated_task_vector(tiny_model):
    base = {n: p.detach() for n, p in tiny_model.named_parameters()}
    # alpha = -1 adds the task vector once: the fine-tuned (EMA) weights theta_ft themselves
    theta_ft = _erase(tiny_model, alpha=-1.0).result.changed
    erased = _erase(tiny_model, alpha=1.75).result.changed
    assert theta_ft and set(erased) == set(theta_ft)
    for n, ft in theta_ft.items():
        want = base[n] - 1.75 * (ft - base[n])
        assert torch.allclose(erased[n], want, atol=1e-6, rtol=1e-5), n
    # and the erased weights moved the opposite way from the fine-tune, 1.75 times as far
    tau = torch.cat([(theta_ft[n] - base[n]).reshape(-1) for n in theta_ft])
    step = torch.cat([(erased[n] - base[n]).reshape(-1) for n in theta_ft])
    assert tau.norm() > 0
    assert torch.allclose(step.norm(), 1.75 * tau.norm(), rtol=1e-4)
    assert torch.dot(step, tau) < 0


def test_alpha_zero_leaves_the_model_unchanged(tiny_model):
    assert _erase(tiny_model, alpha=0.0).result.changed == {}


def test_task_vector_lives_in_the_tuned_weights_only(tiny_model):
    names = set(_erase(tiny_model, train_method="xattn").result.changed)
    assert names and all(".attn2." in n for n in names)


def test_theta_ft_is_the_ema_of_the_fine_tune(tiny_model):
    # EMA off: theta_ft is the last iterate, which differs from the averaged one
    ema = _erase(tiny_model, alpha=-1.0).result.changed
    raw = _erase(tiny_model, alpha=-1.0, ema_decay=0.0).result.changed
    assert any(not torch.equal(ema[n], raw[n]) for n in ema)
    assert ema_decay_at(1, 0.9999) == 0.0  # the first update copies the weights
    assert abs(ema_decay_at(2, 0.9999) - 2 / 11) < 1e-12
    assert ema_decay_at(10**6, 0.9999) == 0.9999
