"""Degeneration-Tuning's signature: the concept captions are trained onto scrambled grids of the
base model's own concept images (same multiset of patches, other positions), and afterwards the
concept caption denoises scrambled grids better than it did."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import genunlearn as gu
from genunlearn import registry
from genunlearn.core.cache import cached_sample
from genunlearn.core.degrade import patches
from genunlearn.methods.degeneration_tuning import scrambled_targets


def _cfg(**kw):
    entry = registry.get("method", "degeneration_tuning")
    return entry.config(**{**entry.presets["smoke"], **kw})


def _multiset(images, grid):
    p = patches(images, grid).flatten(2).reshape(-1, images[0].numel() // grid**2)
    return sorted(tuple(round(v, 6) for v in row.tolist()) for row in p)


def test_targets_are_scrambled_grids_of_the_concept_images(tiny_model):
    cfg = _cfg(n_concept_images=8, grid=4)
    caps, idx, images, scrambled = scrambled_targets(tiny_model, gu.ErasureTask("star"), cfg)
    assert caps and all("star" in c for c in caps)
    # the originals are the base model's images of (an even subset of) those captions
    used = list(dict.fromkeys(idx.tolist()))
    per = len(images) // len(used)
    assert len(images) >= cfg.n_concept_images and len(used) > 1
    assert torch.equal(images, cached_sample(tiny_model, [caps[i] for i in used], n=per, seed=0))
    assert torch.equal(idx, torch.tensor(used).repeat_interleave(per))
    for i in range(len(images)):
        # (that the permutation is never the identity is checked on random images in
        # tests/unit/test_degrade.py: the tiny model's images can have identical patches)
        a, b = images[i : i + 1], scrambled[i : i + 1]
        assert _multiset(a, 4) == _multiset(b, 4)


def _scramble_loss(model, z, cond):
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(z.shape, generator=g)
    t = torch.randint(100, 900, (len(z),), generator=g)
    sched = model.scheduler
    with torch.no_grad():
        return float(F.mse_loss(model.predict_noise(sched.add_noise(z, eps, t), t, cond), eps))


def test_concept_caption_learns_the_scrambled_images(tiny_model):
    kw = {"n_concept_images": 4, "prior_loss_weight": 0.0, "batch_size": 4}
    # gu.erase(seed=0) draws the scramble from seed 0: these are the very training targets
    caps, idx, _, scrambled = scrambled_targets(
        tiny_model, gu.ErasureTask("star"), _cfg(**kw), seed=0
    )
    with torch.no_grad():
        z = tiny_model.encode_images(scrambled)
        cond = tiny_model.encode_prompt(caps)[idx]
    run = gu.erase(
        tiny_model, "degeneration_tuning", "star", preset="smoke", steps=40, lr=3e-3, **kw
    )
    assert _scramble_loss(run.model, z, cond) < 0.7 * _scramble_loss(tiny_model, z, cond)


def test_loss_is_denoising_scrambled_grids_under_the_concept_captions_plus_prior(
    tiny_model, first_loss
):
    """||eps_theta(q(S(x_c), t, eps), t, c) - eps||^2 + w_p ||eps_theta(q(x_r, t, eps'), t, c_r) -
    eps'||^2 at step 0, with S the scramble drawn from the run's seed: fails if the concept
    captions are trained on their unscrambled images, the prior term is dropped or weighted
    wrongly, or the prior images are paired with the concept captions."""
    from genunlearn.core.concept_sets import caption_sets, generate_latents
    from genunlearn.core.degrade import scramble_grid

    w_p, b, n = 0.4, 2, 4
    cfg = _cfg(prior_loss_weight=w_p, batch_size=b, n_concept_images=n)
    work, params, loss, grads, seed, _ = first_loss(
        "degeneration_tuning", tiny_model, gu.ErasureTask("star"), cfg=cfg
    )
    forget, _, remain = caption_sets(tiny_model, gu.ErasureTask("star"))
    concept = generate_latents(tiny_model, forget, n)
    prior = generate_latents(tiny_model, remain, cfg.n_prior_images)
    with torch.no_grad():  # the run's seed (0) draws the scramble
        z_s = tiny_model.encode_images(
            scramble_grid(concept.images, cfg.grid, torch.Generator().manual_seed(0))
        )
    sched = tiny_model.scheduler
    g = torch.Generator().manual_seed(seed)

    def denoise(z, cond):
        eps = torch.randn(z.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=g)
        return (work.predict_noise(sched.add_noise(z, eps, t), t, cond) - eps).pow(2).mean()

    i = torch.randint(len(z_s), (b,), generator=g)
    want = denoise(z_s[i], concept.emb[concept.caption[i]])
    j = torch.randint(len(prior), (b,), generator=g)
    want = want + w_p * denoise(prior.latents[j], prior.emb[prior.caption[j]])
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    refs = torch.autograd.grad(want, list(params.values()))
    for got, ref in zip(grads, refs, strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
