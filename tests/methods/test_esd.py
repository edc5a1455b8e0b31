"""ESD's signature: which weights move, and the negative-guidance target it regresses onto."""

from __future__ import annotations

from itertools import product

import pytest
import torch

import genunlearn as gu
from genunlearn.core.losses import negative_guidance_target
from genunlearn.core.sampling import partial_trajectory


def _changed(model, method="esd", **kw):
    run = gu.erase(model, method, "star", preset="smoke", **kw)
    return set(run.result.changed)


def test_esd_x_changes_only_cross_attention(tiny_model):
    names = _changed(tiny_model, train_method="xattn")
    assert names and all(".attn2." in n for n in names)
    assert all(n.startswith("unet.") for n in names)


def test_esd_u_changes_no_cross_attention(tiny_model):
    names = _changed(tiny_model, train_method="noxattn")
    assert names and not any(".attn2." in n for n in names)


def test_esd_kv_changes_only_keys_and_values(tiny_model):
    names = _changed(tiny_model, train_method="kv")
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)


def test_negative_guidance_target_pushes_past_unconditional():
    e_c, e_u = torch.tensor([2.0]), torch.tensor([0.5])
    assert torch.equal(negative_guidance_target(e_c, e_u, 1.0), torch.tensor([-1.0]))
    assert torch.equal(negative_guidance_target(e_c, e_u, 0.0), e_u)


def test_partial_trajectory_runs_k_steps(tiny_model):
    cond = tiny_model.encode_prompt(["star"])
    unc = tiny_model.encode_prompt([""])
    noise = torch.randn(1, *tiny_model.latent_shape, generator=torch.Generator().manual_seed(0))
    x0, t0 = partial_trajectory(tiny_model, cond, unc, 5, 0, 3.0, noise)
    assert torch.equal(x0, noise * tiny_model.scheduler.init_noise_sigma)
    x2, t2 = partial_trajectory(tiny_model, cond, unc, 5, 2, 3.0, noise)
    assert t2 < t0 and not torch.equal(x2, x0)
    # the sampler's first two steps reach the same latents
    x2b, _ = partial_trajectory(tiny_model, cond, unc, 5, 2, 3.0, noise)
    assert torch.equal(x2, x2b)


def test_esd_caption_prompts_are_world_captions_with_the_target(tiny_model):
    run = gu.erase(tiny_model, "esd", "star", preset="smoke", prompt="captions", max_prompts=7)
    prompts = run.result.info["prompts"]
    world = tiny_model.world
    kinds = list(world.heads)
    every = {
        world.caption(dict(zip(kinds, c, strict=True))) for c in product(*world.heads.values())
    }
    assert len(prompts) == 7 and len(set(prompts)) == 7
    assert all(p in every and "star" in p.split() for p in prompts)
    # spread over the concept's captions (several colours), not the first rows only
    assert len({p.split()[1] for p in prompts}) > 1


# --- the objective: which model makes the target, which prompt the student sees -------------
# The teacher is made distinguishable: the frozen copy adds a constant offset d_p to its
# prediction for prompt p. The trajectory (drawn by the student) and the student's own prediction
# do not change, so the step-0 loss is E[(pred - target0 - s * D)^2] for offset scale s, where
# D = the offsets' combination that enters the target. Its second difference over s in {1, 0, -1}
# is exactly D^2: zero if the student made the target, another value if a term or a prompt is
# wrong.
A, B = "a star", "a red heart in flat style"
OFFSETS = {"": 1.0, A: 3.0, B: 4.0}


def _first_loss(model, monkeypatch, scale: float, **kw) -> float:
    emb = {p: model.encode_prompt([p]) for p in OFFSETS}
    real = type(model).frozen_copy

    def offset_teacher(self):
        teacher = real(self)
        plain = teacher.predict_noise

        def predict(x_t, t, cond):
            (p,) = [p for p, e in emb.items() if torch.equal(cond[0], e[0])]
            return plain(x_t, t, cond) + scale * OFFSETS[p]

        teacher.predict_noise = predict
        return teacher

    monkeypatch.setattr(type(model), "frozen_copy", offset_teacher)
    run = gu.erase(model, "esd", "star", preset="smoke", seed=0, steps=1, prompt=A, **kw)
    monkeypatch.setattr(type(model), "frozen_copy", real)
    return run.result.info["first_loss"]


@pytest.mark.parametrize("erase_from", [None, B])
def test_target_is_the_frozen_teachers_negative_guidance(tiny_model, monkeypatch, erase_from):
    eta = 1.0
    d_u, d_a, d_b = OFFSETS[""], OFFSETS[A], OFFSETS[B]
    if erase_from is None:  # eps*(empty) - eta (eps*(c) - eps*(empty))
        d = d_u - eta * (d_a - d_u)
    else:  # eps*(B) - eta (eps*(c) - eps*(empty)) (official "erase A from B")
        d = d_b - eta * (d_a - d_u)
    losses = {
        s: _first_loss(tiny_model, monkeypatch, s, negative_guidance=eta, erase_from=erase_from)
        for s in (1.0, 0.0, -1.0)
    }
    second = (losses[1.0] + losses[-1.0]) / 2 - losses[0.0]
    assert second == pytest.approx(d**2, rel=1e-3, abs=1e-4)


def test_erase_from_trains_the_student_on_b(tiny_model, monkeypatch):
    seen = []
    real = type(tiny_model).predict_noise

    def recording(self, x_t, t, cond):
        if torch.is_grad_enabled():  # the student's prediction (teacher and sampler: no_grad)
            seen.append(cond.detach().clone())
        return real(self, x_t, t, cond)

    monkeypatch.setattr(type(tiny_model), "predict_noise", recording)
    run = gu.erase(tiny_model, "esd", "star", preset="smoke", seed=0, prompt=A, erase_from=B)
    emb_b = tiny_model.encode_prompt([B])[0]
    assert len(seen) == 2  # one student prediction per step
    assert all(torch.equal(c[i], emb_b) for c in seen for i in range(len(c)))
    assert run.result.info["student_prompts"] == [B]
