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


# --- the objective, pinned at the first training step ---------------------------------------


def test_loss_is_the_guidance_surgery_plus_the_unconditional_constraint(tiny_model, first_loss):
    """||[eps_theta(c) - eps_theta("")] - [eps*(a) - eps*("")]||^2 + lambda_u ||eps_theta("") -
    eps*("")||^2 at step 0, with eps* the frozen original and the student nudged away from it:
    fails if the alternative's guidance comes from the student, the guidance difference is
    replaced by the raw predictions (ESD-style) or flips sign, the constraint is dropped, or
    lambda_u weights the wrong term."""
    from genunlearn.core.concept_sets import generate_latents

    task = gu.ErasureTask("star", anchor="heart")
    w_u, b, n = 2.5, 2, 4
    student, params, loss, grads, seed, _ = first_loss(
        "all_but_one", tiny_model, task, nudge=0.2, uncond_weight=w_u, batch_size=b, n_images=n
    )
    # independently: the original model's images of the target captions, the step's draws
    alts, targets, _ = anchor_pairs(tiny_model, task, "all_but_one")
    data = generate_latents(tiny_model, targets, n)
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(data), (b,), generator=g)
    eps = torch.randn(data.latents[i].shape, generator=g)
    sched = tiny_model.scheduler
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    x_t = sched.add_noise(data.latents[i], eps, t)
    with torch.no_grad():
        c = tiny_model.encode_prompt([targets[k] for k in data.caption[i]])
        a = tiny_model.encode_prompt([alts[k] for k in data.caption[i]])
        u = tiny_model.encode_prompt([""] * b)
        # the alternative's guidance and the unconditional score come from the frozen original
        frozen_a, frozen_u = (
            tiny_model.predict_noise(x_t, t, a),
            tiny_model.predict_noise(x_t, t, u),
        )
    e_c, e_u = student.predict_noise(x_t, t, c), student.predict_noise(x_t, t, u)
    surgery = (e_c - e_u - (frozen_a - frozen_u)).pow(2).mean()
    constraint = (e_u - frozen_u).pow(2).mean()
    want = surgery + w_u * constraint
    assert constraint.item() > 1e-3 * surgery.item()  # the nudge makes both terms matter
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    for got, ref in zip(grads, torch.autograd.grad(want, list(params.values())), strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
