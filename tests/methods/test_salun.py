"""SalUn's signature: a saliency mask of the configured fraction, and only masked weights move."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import genunlearn as gu
from genunlearn import registry
from genunlearn.methods import salun


def _smoke_cfg(**kw):
    from genunlearn.config import build_config

    entry = registry.get("method", "salun")
    return build_config(entry.config, entry.presets["smoke"], kw)


def _mask(model, seed, **kw):
    """The mask ``gu.erase(..., seed=seed)`` computes (same data, same seed)."""
    cfg = _smoke_cfg(**kw)
    work = model.copy()
    forget, _, _ = salun.build_sets(work, gu.ErasureTask("star"), cfg)
    return salun.compute_mask(work, forget, cfg, seed=seed)


def _changed_entries(model, run):
    base = dict(model.named_parameters())
    return {n: (v != base[n].detach()) for n, v in run.result.changed.items()}


def test_only_weights_inside_the_mask_change(tiny_model):
    mask = _mask(tiny_model, seed=0, mask_fraction=0.2)
    run = gu.erase(tiny_model, "salun", "star", preset="smoke", seed=0, mask_fraction=0.2)
    moved = _changed_entries(tiny_model, run)
    assert sum(int(m.sum()) for m in moved.values()) > 0
    for n, m in moved.items():
        assert n in mask, f"{n} changed but is outside the mask scope"
        assert not (m & (mask[n] == 0)).any(), f"{n} changed outside its saliency mask"


def test_mask_has_the_configured_fraction(tiny_model):
    for fraction in (0.5, 0.1):
        mask = _mask(tiny_model, seed=1, mask_fraction=fraction)
        total = sum(m.numel() for m in mask.values())
        assert sum(int(m.sum()) for m in mask.values()) == int(fraction * total)
    run = gu.erase(tiny_model, "salun", "star", preset="smoke", seed=1)
    assert run.result.info["scored_weights"] == sum(
        p.numel() for n, p in tiny_model.named_parameters() if n.startswith("unet.")
    )
    assert abs(run.result.info["mask_fraction"] - 0.5) < 1e-6  # paper default


def test_mask_follows_the_forget_gradient_not_chance(tiny_model):
    # two seeds draw different noise but the salient weights largely agree (well above the 50%
    # overlap two random half-masks would have)
    a, b = _mask(tiny_model, seed=0), _mask(tiny_model, seed=5)
    both = sum(int((a[n] * b[n]).sum()) for n in a)
    kept = sum(int(a[n].sum()) for n in a)
    assert both / kept > 0.6


def test_relabelling_pulls_the_target_prediction_to_the_pseudo_prompt(tiny_model):
    run = gu.erase(
        tiny_model, "salun", "star", preset="smoke", seed=0, alpha=0.0, steps=15, lr=3e-3,
        mask_fraction=1.0, train_method="xattn", mask_scope="xattn",
    )  # fmt: skip
    cfg = _smoke_cfg()
    forget, pseudo, _ = salun.build_sets(tiny_model, gu.ErasureTask("star"), cfg)
    assert "heart" in pseudo.prompts[0] and "star" in forget.prompts[0]  # next object in order
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *tiny_model.latent_shape, generator=g)
    c_f = forget.emb[forget.caption[:1]].expand(4, -1, -1)
    c_p = pseudo.emb[pseudo.caption[:1]].expand(4, -1, -1)

    def gap(m):
        with torch.no_grad():
            return F.mse_loss(m.predict_noise(x, 500, c_f), m.predict_noise(x, 500, c_p))

    assert gap(run.model) < 0.5 * gap(tiny_model)


def test_loss_is_relabelling_onto_the_current_models_detached_pseudo_prediction(
    tiny_model, first_loss
):
    """||eps_theta(x_t, c_f) - sg[eps_theta(x_t, c_pseudo)]||^2 + alpha * (denoising loss on the
    remain set), at step 0 after the trained weights were nudged away from the original: fails
    if the pseudo prediction comes from the frozen original instead of the current model, is
    not detached (or the two captions trade places, which only the gradient shows), or the
    remain term is dropped or weighted wrongly."""
    from genunlearn.core.concept_sets import caption_sets, generate_latents

    alpha, b = 0.3, 2
    work, params, loss, grads, seed, cfg = first_loss(
        "salun", tiny_model, gu.ErasureTask("star"), nudge=0.2, alpha=alpha, batch_size=b,
        train_method="xattn", mask_scope="xattn",
    )  # fmt: skip
    forget_p, pseudo_p, remain_p = caption_sets(tiny_model, gu.ErasureTask("star"))
    assert all(p == f.replace("star", "heart") for p, f in zip(pseudo_p, forget_p, strict=True))
    forget = generate_latents(tiny_model, forget_p, cfg.n_forget_images)
    remain = generate_latents(tiny_model, remain_p, cfg.n_remain_images)
    with torch.no_grad():
        c_pseudo = tiny_model.encode_prompt(pseudo_p)
    sched = tiny_model.scheduler
    T = sched.config.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(forget), (b,), generator=g)
    noise = torch.randn(forget.latents[i].shape, generator=g)
    t = torch.randint(0, T, (b,), generator=g)
    x_t = sched.add_noise(forget.latents[i], noise, t)
    with torch.no_grad():  # the pseudo label: the *current* (nudged) model, detached
        target = work.predict_noise(x_t, t, c_pseudo[forget.caption[i]])
    loss_f = (work.predict_noise(x_t, t, forget.emb[forget.caption[i]]) - target).pow(2).mean()
    j = torch.randint(len(remain), (b,), generator=g)
    noise_r = torch.randn(remain.latents[j].shape, generator=g)
    t_r = torch.randint(0, T, (b,), generator=g)
    pred_r = work.predict_noise(
        sched.add_noise(remain.latents[j], noise_r, t_r), t_r, remain.emb[remain.caption[j]]
    )
    want = loss_f + alpha * (pred_r - noise_r).pow(2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    refs = torch.autograd.grad(want, list(params.values()))
    for got, ref in zip(grads, refs, strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))


def test_mask_scores_are_the_guided_forget_loss_gradient(tiny_model):
    """The saliency of a weight is |sum over the forget batches of the gradient of
    ||(1 + w) eps(x_t, c_f) - w eps(x_t, "") - eps||^2|| (w = mask_guidance): the mask must keep
    exactly the top-scoring weights of that score. Fails if the score drops the guidance (plain
    conditional loss), flips the unconditional branch's sign, or scores another set."""
    from genunlearn.config import build_config
    from genunlearn.core.concept_sets import caption_sets, generate_latents
    from genunlearn.core.params import select_parameters

    w, b, seed = 7.5, 2, 3
    entry = registry.get("method", "salun")
    cfg = build_config(
        entry.config, entry.presets["smoke"],
        {"mask_scope": "kv", "mask_batch_size": b, "mask_fraction": 0.3, "mask_guidance": w},
    )  # fmt: skip
    forget = generate_latents(tiny_model, caption_sets(tiny_model, gu.ErasureTask("star"))[0], 4)
    m = tiny_model.copy()
    mask = salun.compute_mask(m, forget, cfg, seed=seed)
    params = select_parameters(m, "kv")
    assert set(mask) == set(params)
    for p in params.values():
        p.requires_grad_(True)
    sched = m.scheduler
    score = {n: torch.zeros_like(p) for n, p in params.items()}
    with torch.no_grad():
        uncond = m.encode_prompt([""] * b)
    for i in range(len(forget) // b):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        z0 = forget.latents[i * b : (i + 1) * b]
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
        x_t = sched.add_noise(z0, noise, t)
        e_c = m.predict_noise(x_t, t, forget.emb[forget.caption[i * b : (i + 1) * b]])
        e_u = m.predict_noise(x_t, t, uncond)
        loss = ((1 + w) * e_c - w * e_u - noise).pow(2).mean()
        for n, gr in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            score[n] += gr
    kept = torch.cat([score[n].abs().reshape(-1)[mask[n].reshape(-1) > 0] for n in params])
    dropped = torch.cat([score[n].abs().reshape(-1)[mask[n].reshape(-1) == 0] for n in params])
    assert len(kept) == int(0.3 * (len(kept) + len(dropped)))
    assert kept.min() >= dropped.max() * (1 - 1e-4)
