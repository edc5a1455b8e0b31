"""SafeGen's signature: only self-attention (attn1) moves, training is text-agnostic, and the
concept's images are denoised towards their mosaics while benign images keep the plain target."""

from __future__ import annotations

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
