"""SafeGen's signature: only self-attention (attn1) moves, training is text-agnostic, and the
concept's images are denoised towards their mosaics while benign images keep the plain target."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn import registry
from genunlearn.core.concept_sets import caption_sets, generate_latents
from genunlearn.core.degrade import mosaic
from genunlearn.methods.safegen import triplets


def _cfg(**kw):
    entry = registry.get("method", "safegen")
    return entry.config(**{**entry.presets["smoke"], **kw})


def test_changes_only_self_attention(tiny_model):
    run = gu.erase(tiny_model, "safegen", "star", preset="smoke")
    names = set(run.result.changed)
    assert names and all(".attn1." in n for n in names)
    assert not any(".attn2." in n for n in names)


def test_triplets_are_concept_mosaic_benign_with_the_empty_caption(tiny_model):
    cfg = _cfg(n_concept_images=4, n_benign_images=4)
    z_c, z_m, z_b, emb_c, emb_b = triplets(tiny_model, gu.ErasureTask("star"), cfg)
    empty = tiny_model.encode_prompt([""])
    assert torch.equal(emb_c, empty.expand_as(emb_c)) and torch.equal(emb_b, empty.expand_as(emb_b))
    # z_m[i] encodes the pixelated version of the very image z_c[i] encodes
    data = generate_latents(tiny_model, caption_sets(tiny_model, gu.ErasureTask("star"))[0], 4)
    images, z = data.images, data.latents
    with torch.no_grad():
        assert torch.allclose(z_c, z)
        assert torch.allclose(z_m, tiny_model.encode_images(mosaic(images, cfg.mosaic_block)))
    assert not torch.allclose(z_m, z_c)


def test_loss_is_concept_to_mosaic_plus_benign_preservation(tiny_model, first_loss):
    """w_m ||eps_theta(q(z_c, t, eps), t, "") - (eps + z_c - z_m)||^2 + w_p ||eps_theta(q(z_b, t,
    eps'), t, "") - eps'||^2, recomputed from the base model's images and their mosaics: fails
    if the mosaic target's sign flips (clean estimate pushed *away* from the mosaic), the
    target is plain noise, a term or a weight is swapped, or the caption is not empty."""
    w_m, w_p, b, n = 0.3, 0.7, 2, 4
    work, params, loss, grads, seed, cfg = first_loss(
        "safegen", tiny_model, gu.ErasureTask("star"), weight_mosaic=w_m, weight_preserve=w_p,
        batch_size=b, n_concept_images=n,
    )  # fmt: skip
    forget, _, remain = caption_sets(tiny_model, gu.ErasureTask("star"))
    concept, benign = (
        generate_latents(tiny_model, forget, n),
        generate_latents(tiny_model, remain, 2),
    )
    with torch.no_grad():
        z_m = tiny_model.encode_images(mosaic(concept.images, cfg.mosaic_block))
        empty = tiny_model.encode_prompt([""] * b)
    sched = tiny_model.scheduler
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(concept), (b,), generator=g)
    j = torch.randint(len(benign), (b,), generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    eps = torch.randn(concept.latents[i].shape, generator=g)
    eps_b = torch.randn(benign.latents[j].shape, generator=g)
    z_c = concept.latents[i]
    pred_c = work.predict_noise(sched.add_noise(z_c, eps, t), t, empty)
    pred_b = work.predict_noise(sched.add_noise(benign.latents[j], eps_b, t), t, empty)
    # the concept's target is offset by z_c - z_m, so its clean-image estimate moves to the mosaic
    want = (
        w_m * (pred_c - (eps + z_c - z_m[i])).pow(2).mean() + w_p * (pred_b - eps_b).pow(2).mean()
    )
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    for got, ref in zip(grads, torch.autograd.grad(want, list(params.values())), strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
