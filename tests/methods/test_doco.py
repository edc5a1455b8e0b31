"""DoCo's signature: the concept-preserving gradient never conflicts with the preservation
gradient (and is the raw gradient when there is no conflict), the discriminator really trains,
and only cross-attention K/V move by default."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.doco import PatchDiscriminator, discriminator_step, preserving_gradient


def _pair(seed: int, conflict: bool):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    if (torch.dot(a, b) < 0) != conflict:
        b = -b
    return a, b


@pytest.mark.parametrize("seed", range(5))
def test_conflicting_gradient_is_projected_off(seed):
    g, g_p = _pair(seed, conflict=True)
    out = preserving_gradient(g, g_p, 1.0)
    assert torch.dot(out, g_p) >= -1e-5 * g.norm() * g_p.norm()
    # only the component along g_p changed
    perp = g - torch.dot(g, g_p) / torch.dot(g_p, g_p) * g_p
    assert torch.allclose(out, perp, atol=1e-5)
    # lambda scales how much of the conflict is removed
    half = preserving_gradient(g, g_p, 0.5)
    assert torch.isclose(torch.dot(half, g_p), 0.5 * torch.dot(g, g_p), rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_non_conflicting_gradient_is_unchanged(seed):
    g, g_p = _pair(seed, conflict=False)
    assert torch.equal(preserving_gradient(g, g_p, 1.0), g)


def test_discriminator_gives_a_patch_map_for_small_and_large_latents():
    assert PatchDiscriminator(4, 8)(torch.randn(2, 4, 8, 8)).shape == (2, 1, 1, 1)
    assert PatchDiscriminator(4, 64)(torch.randn(2, 4, 64, 64)).shape == (2, 1, 3, 3)


def test_default_changes_only_attn2_kv(tiny_model):
    run = gu.erase(tiny_model, "doco", "star", preset="smoke")
    names = set(run.result.changed)
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)


def test_surgery_removes_real_conflicts_during_training(tiny_model):
    run = gu.erase(tiny_model, "doco", "star", preset="smoke", steps=14, warm_up=2)
    info = run.result.info
    # the adversarial and preservation gradients did conflict at some step ...
    assert info["min_inner_raw"] < 0
    # ... and no applied update conflicted with preservation
    assert info["min_inner_applied"] >= -1e-9


def test_discriminator_step_learns_to_separate_anchor_from_target():
    torch.manual_seed(0)
    disc = PatchDiscriminator(4, 8, width=8)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        real = torch.randn(8, 4, 8, 8, generator=g) + 1.0  # "anchor" clean estimates
        fake = torch.randn(8, 4, 8, 8, generator=g) - 1.0  # "target" clean estimates
        losses.append(discriminator_step(disc, opt, real, fake))
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


def test_discriminator_trains_at_every_step_of_a_run(tiny_model):
    run = gu.erase(tiny_model, "doco", "striped", preset="smoke", steps=6, warm_up=3)
    d = run.result.info["d_losses"]
    # one discriminator update per warm-up step and per UNet step, and its loss moves
    assert len(d) == 6 and len(set(d)) > 1


def test_warm_up_must_leave_unet_steps(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="warm_up must be in"):
        gu.erase(tiny_model, "doco", "star", preset="smoke", steps=4, warm_up=4)


def test_step_is_the_adversarial_gradient_corrected_by_the_prior_gradient(
    tiny_model, monkeypatch, first_loss
):
    """At the first UNet step (after the trained K/V were nudged away from the original): the
    discriminator sees the *frozen original's* x0 for the anchor caption as real and the
    student's x0 for the target caption as fake; the UNet's update is the gradient of
    BCE(D(x0_theta(x_t, c)), real), clipped, with the component that conflicts with the clipped
    gradient of ||eps_theta(x_t, a) - eps||^2 projected off, per tensor. Fails if the anchor's
    x0 comes from the student, real and fake trade places, the adversarial label flips, the
    prior loss uses the target caption, or the surgery is dropped or reversed."""
    import copy

    from genunlearn.core.concept_sets import anchor_pairs, generate_latents
    from genunlearn.methods import doco

    b, lam, clip = 2, 1.0, 1.0
    task, seen, discs, d_calls = gu.ErasureTask("star", anchor="heart"), {}, [], []

    class Recorded(PatchDiscriminator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            discs.append(self)

    def recorded_step(disc, opt, real, fake):
        d_calls.append((real.detach().clone(), fake.detach().clone()))
        return discriminator_step(disc, opt, real, fake)

    def keep_disc():
        seen["disc"] = copy.deepcopy(discs[0])  # D as the step's loss sees it

    monkeypatch.setattr(doco, "PatchDiscriminator", Recorded)
    monkeypatch.setattr(doco, "discriminator_step", recorded_step)
    work, params, loss, grads, seed, cfg = first_loss(
        "doco", tiny_model, task, nudge=0.2, before_loss=keep_disc, batch_size=b,
        surgery_lambda=lam, max_grad_norm=clip, n_anchor_images=4,
    )  # fmt: skip
    assert len(d_calls) == cfg.warm_up + 1

    anchors, targets, _ = anchor_pairs(tiny_model, task, "doco")
    data = generate_latents(tiny_model, anchors, cfg.n_anchor_images)
    with torch.no_grad():
        c, a = tiny_model.encode_prompt(targets), tiny_model.encode_prompt(anchors)
    sched = tiny_model.scheduler
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(data), (b,), generator=g)
    eps = torch.randn(data.latents[i].shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    x_t = sched.add_noise(data.latents[i], eps, t)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)

    def x0(e):
        return (x_t - (1 - abar).sqrt() * e) / abar.sqrt()

    c, a = c[data.caption[i]], a[data.caption[i]]
    with torch.no_grad():
        x0_anchor = x0(tiny_model.predict_noise(x_t, t, a))
    x0_student = x0(work.predict_noise(x_t, t, c))
    real, fake = d_calls[-1]
    assert torch.allclose(real, x0_anchor, rtol=1e-4, atol=1e-5)
    assert torch.allclose(fake, x0_student.detach(), rtol=1e-4, atol=1e-5)
    logits = seen["disc"](x0_student)
    adv = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    prior = (work.predict_noise(x_t, t, a) - eps).pow(2).mean()
    plist = list(params.values())

    def clipped(gs):
        norm = torch.sqrt(sum((x * x).sum() for x in gs))
        return [x * min(1.0, clip / (float(norm) + 1e-6)) for x in gs]

    g_adv = clipped(torch.autograd.grad(adv, plist, retain_graph=True))
    g_pri = clipped(torch.autograd.grad(prior, plist))
    want, conflicts = [], 0
    for ga, gp in zip(g_adv, g_pri, strict=True):
        dot = (ga * gp).sum()
        conflicts += int(dot < 0)
        want.append(ga - lam * dot / (gp * gp).sum() * gp if dot < 0 else ga)
    assert 0 < conflicts < len(plist)  # both branches of the surgery are exercised
    assert loss.item() == pytest.approx(adv.item(), rel=1e-4)
    for got, ref in zip(grads, want, strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
