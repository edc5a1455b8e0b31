"""RACE's signature: a PGD adversary inside the epsilon ball that lowers its own objective, the
ESD loss taken at the adversarial embedding, targets from the original weights, ESD first."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.race import pgd_embedding
from genunlearn.types import GenUnlearnError


def test_pgd_descends_and_stays_in_the_ball():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 6, 5, generator=g)
    z = torch.randn(c.shape, generator=g)
    goal = c + torch.sign(z) * (1 + z.abs())  # every coordinate far outside the ball
    eps = 0.1

    def loss_of(e):
        return ((e - goal) ** 2).sum()

    adv = pgd_embedding(loss_of, c, eps, 10, torch.Generator().manual_seed(1))
    assert (adv - c).abs().max() <= eps + 1e-6
    assert c.min() - 1e-6 <= adv.min() and adv.max() <= c.max() + 1e-6
    # a descent reaches the ball's corner towards the goal wherever the clamp allows it
    corner = torch.clamp(c + eps * torch.sign(goal - c), c.min(), c.max())
    assert torch.allclose(adv, corner, atol=1e-6)
    assert loss_of(adv) < loss_of(c)  # an ascent (a sign slip) would raise it


def _record_student(monkeypatch, model):
    seen = []
    real = type(model).predict_noise

    def recording(self, x_t, t, cond):
        if torch.is_grad_enabled() and not cond.requires_grad:  # the loss's prediction
            seen.append(cond.detach().clone())
        return real(self, x_t, t, cond)

    monkeypatch.setattr(type(model), "predict_noise", recording)
    return seen


def test_esd_loss_is_taken_at_the_adversarial_embedding(tiny_model, monkeypatch):
    eps = 0.05
    seen = _record_student(monkeypatch, tiny_model)
    run = gu.erase(tiny_model, "race", "star", preset="smoke", epsilon=eps, prompt="a star")
    c = tiny_model.encode_prompt(["a star"])
    # the ESD stage's one step sees the concept itself; then one adversarial prediction a step
    assert len(seen) == 1 + 2 and torch.equal(seen[0], c)
    for e in seen[1:]:
        shift = (e - c).abs().max()
        assert 0 < shift <= eps + 1e-6  # moved by the adversary, inside the ball
    assert run.result.info["max_embedding_shift"] <= eps + 1e-6


def test_attack_lowers_the_current_models_denoising_error(tiny_model):
    from torch.nn import functional as F

    from genunlearn.core.sampling import partial_trajectory

    c = tiny_model.encode_prompt(["a star"])
    u = tiny_model.encode_prompt([""])
    better = 0
    for s in range(4):
        g = torch.Generator().manual_seed(s)
        z = tiny_model.randn((1, *tiny_model.latent_shape), g)
        x_t, t = partial_trajectory(tiny_model, c, u, 5, 2, 3.0, z)

        def loss_of(e, x_t=x_t, t=t, z=z):
            return F.mse_loss(tiny_model.predict_noise(x_t, t, e), z)

        adv = pgd_embedding(loss_of, c, 0.5, 10, g)
        with torch.no_grad():
            better += float(loss_of(adv)) < float(loss_of(c))
    assert better >= 3


def test_targets_come_from_the_original_not_the_esd_stage(tiny_model, monkeypatch):
    teachers = []
    real = type(tiny_model).frozen_copy

    def recording(self):
        teachers.append(real(self))
        return teachers[-1]

    monkeypatch.setattr(type(tiny_model), "frozen_copy", recording)
    run = gu.erase(tiny_model, "race", "star", preset="smoke", esd_steps=2, lr=1e-2)
    assert run.result.changed
    base = dict(tiny_model.named_parameters())
    first = dict(teachers[0].named_parameters())  # RACE's teacher (ESD's own comes after it)
    assert all(torch.equal(first[n], base[n]) for n in run.result.changed)
    assert run.efficiency["train_steps"] == 2 + 2  # ESD stage, then the adversarial stage


def test_continues_an_esd_run_and_refuses_other_runs(tiny_model, tmp_path, first_loss):
    esd = gu.erase(tiny_model, "esd", "star", preset="smoke", lr=1e-2, out_dir=tmp_path / "esd")
    # RACE's first (and only: no ESD stage) training loss is taken on the ESD run's weights
    step = first_loss("race", tiny_model, gu.ErasureTask(["star"]), from_run=str(esd.path))
    now = dict(step.model.named_parameters())
    assert esd.result.changed and set(step.params) == set(esd.result.changed)
    assert all(torch.equal(now[n].detach(), v) for n, v in esd.result.changed.items())
    other = gu.erase(tiny_model, "uce", "star", preset="smoke", out_dir=tmp_path / "uce")
    with pytest.raises(GenUnlearnError, match="race continues an esd run.*'uce' run"):
        gu.erase(tiny_model, "race", "star", preset="smoke", from_run=str(other.path))


@pytest.mark.parametrize(
    "bad, match",
    [({"epsilon": 0.0}, "epsilon must be"), ({"epsilon": float("inf")}, "epsilon must be"),
     ({"pgd_steps": 0}, "pgd_steps must be"), ({"attack_loss": "l3"}, "attack_loss must be")],
)  # fmt: skip
def test_out_of_range_settings_name_the_valid_range(tiny_model, bad, match):
    with pytest.raises(GenUnlearnError, match=match):
        gu.erase(tiny_model, "race", "star", preset="smoke", **bad)
