"""MACE's signature: CFR aligns the words around the target, one attention LoRA per concept,
closed-form fusion of many concepts at once (>= 10), only attn2 K/V change."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.attention import attention_probs, concept_attention_loss, position_mask
from genunlearn.data.prompts import GENERAL_CAPTIONS
from genunlearn.data.toycanvas import sample_labelled_with_mask
from genunlearn.methods.mace import _aligned, _preserve, concept_pairs

TEN = ("star", "heart", "circle", "moon", "arrow", "striped", "dotted", "wavy", "noisy", "red")


def test_cfr_pairs_drop_the_target_and_align_surrounding_tokens(tiny_model):
    old, new, words = concept_pairs(tiny_model, "star", "", 3)
    assert all("star" in o for o in old) and not any("star" in n for n in new)
    assert words == "star"
    ia, ib = _aligned(tiny_model, "a red star in striped style", "a red in striped style")
    assert ia[:3] == ib[:3] == [0, 1, 2]  # <bos> a red
    assert ia[3:7] == [4, 5, 6, 7] and ib[3:7] == [3, 4, 5, 6]  # in striped style <eot>
    assert 3 not in ia  # the target token itself is left to the LoRA stage
    assert len(ia) == len(ib) and max(ia) < 32 and max(ib) < 32


def _mass(model, concept, labels):
    """In-region attention on the concept's tokens for a held-out world image (MACE's objective)."""
    img, mask = sample_labelled_with_mask(
        labels["object"], labels["style"], labels["colour"], 5, 99
    )
    image = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    caption = model.world.caption(labels)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        z0 = model.encode_images(image).expand(2, -1, -1, -1)
        t = torch.tensor([250, 600])
        x_t = model.scheduler.add_noise(z0, torch.randn(z0.shape, generator=g), t)
        probs = attention_probs(model, x_t, t, model.encode_prompt([caption] * 2))
    pos = position_mask(model, [caption] * 2, [model.world.text(concept)] * 2, include_eot=True)
    region = torch.from_numpy(mask)[None].expand(2, -1, -1)
    return float(concept_attention_loss(list(probs.values()), pos, region))


def test_mace_erases_ten_concepts_in_one_call(tiny_model):
    run = gu.erase(tiny_model, "mace", gu.ErasureTask(TEN), preset="smoke", steps=12, lr=0.05)
    kv = {
        f"unet.{n}.{p}.weight"
        for n in tiny_model.cross_attention_layers()
        for p in ("to_k", "to_v")
    }
    assert set(run.result.changed) <= kv and run.result.changed
    assert set(run.result.info["lora_loss_first_last"]) == set(TEN)
    drops = []
    for c in TEN:
        kind = tiny_model.world.kind_of(c)
        labels = {"object": "cross", "style": "dotted", "colour": "green", kind: c}
        drops.append(_mass(run.model, c, labels) / _mass(tiny_model, c, labels))
    # the fused model carries every one of the ten LoRAs: each concept lost its in-region attention
    assert all(d < 0.8 for d in drops), drops


def test_mace_bad_input_is_a_clear_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="mapping"):
        gu.erase(tiny_model, "mace", "star", preset="smoke", mapping="star")
    with pytest.raises(gu.GenUnlearnError, match="retain"):
        gu.erase(
            tiny_model, "mace", gu.ErasureTask("star", retain=("star", "heart")), preset="smoke"
        )
    with pytest.raises(gu.GenUnlearnError, match=r"rank must be in \[1, "):
        gu.erase(tiny_model, "mace", "star", preset="smoke", rank=0)
    with pytest.raises(gu.GenUnlearnError, match=r"rank must be in \[1, "):
        gu.erase(tiny_model, "mace", "star", preset="smoke", rank=10_000)


def _kv_pairs(base, erased):
    for name, layer in base.cross_attention_layers().items():
        new = erased.denoiser.get_submodule(name)
        for proj in ("to_k", "to_v"):
            yield getattr(layer, proj).weight.detach(), getattr(new, proj).weight.detach()


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_mace_paper_preset_without_a_world_preserves_general_captions(tiny_model):
    """Issue 20, item 8: 5 templates and "" alone made the closed form rank-deficient (weights
    blown up by orders of magnitude). The paper preserves COCO captions' keys and values."""
    plain = tiny_model.copy()
    plain.world = None
    run = gu.erase(plain, "mace", "star", preset="paper", progress=False)
    info = run.result.info
    assert info["preserve_source"].startswith("general captions")
    assert info["n_preserve_prompts"] == len(GENERAL_CAPTIONS) + 1  # none names "star"; plus ""
    with torch.no_grad():
        c_gen = tiny_model.encode_prompt(list(GENERAL_CAPTIONS[:20])).flatten(0, 1)
        for w_old, w_new in _kv_pairs(tiny_model, run.model):
            assert _rel(w_new, w_old) < 0.5  # a bounded edit, not a blown-up weight
            assert _rel(c_gen @ w_new.T, c_gen @ w_old.T) < 0.05  # general prompts keep K/V
    # captions naming a target are not preserved (the edit and the preserve term would clash)
    keep, _, _ = _preserve(plain, gu.ErasureTask("dog"))
    assert keep and not any("dog" in k.split() for k in keep)
    assert len(keep) < len(GENERAL_CAPTIONS) + 1


# CFR's objective: with lam ~ 0, no fusion preserve term and a frozen LoRA (lr ~ 0), the model MACE
# returns is the CFR solution: the aligned tokens around the target map to the mapping prompt's
# keys/values, and the preserve term holds other captions' keys/values.
CFR = dict(preset="smoke", steps=1, lr=1e-12, lam=1e-3)
KEEP = ["a green heart in dotted style", "a green circle in dotted style", "a blue moon"]


def _cfr_rows(model):
    old, new, _ = concept_pairs(model, "star", "", 3)
    e_old, e_new = model.encode_prompt(old), model.encode_prompt(new)
    pairs = [_aligned(model, o, n) for o, n in zip(old, new, strict=True)]
    c_old = torch.cat([e_old[i, ia] for i, (ia, _) in enumerate(pairs)])
    c_new = torch.cat([e_new[i, ib] for i, (_, ib) in enumerate(pairs)])
    return c_old, c_new


def test_mace_cfr_maps_surrounding_tokens_to_the_mapping_and_preserves(tiny_model):
    free = gu.erase(tiny_model, "mace", "star", **CFR, train_preserve_scale=0.0,
                    fuse_preserve_scale=0.0)  # fmt: skip
    kept = gu.erase(tiny_model, "mace", "star", **CFR, train_preserve_scale=0.1,
                    fuse_preserve_scale=0.0)  # fmt: skip
    with torch.no_grad():
        c_old, c_new = _cfr_rows(tiny_model)
        c_p = tiny_model.encode_prompt(KEEP).flatten(0, 1)
        pairs = zip(
            _kv_pairs(tiny_model, free.model), _kv_pairs(tiny_model, kept.model), strict=True
        )
        for (w0, w_free), (_, w_kept) in pairs:
            want = c_new @ w0.T  # the mapping prompt's original keys / values
            assert _rel(c_old @ w_free.T, want) < 0.1 * _rel(c_old @ w0.T, want)
            drift_free = _rel(c_p @ w_free.T, c_p @ w0.T)
            assert _rel(c_p @ w_kept.T, c_p @ w0.T) < 0.2 * drift_free


def test_mace_fusion_pulls_preserved_prompts_back_to_the_original_weights(tiny_model):
    # CFR without its preserve term moves other captions; the fusion's preserve term restores
    # their original (W_0) keys/values, not the refined ones
    kw = dict(CFR, train_preserve_scale=0.0)
    refined = gu.erase(tiny_model, "mace", "star", **kw, fuse_preserve_scale=0.0)
    fused = gu.erase(tiny_model, "mace", "star", **kw, fuse_preserve_scale=10.0)
    with torch.no_grad():
        c_p = tiny_model.encode_prompt(KEEP).flatten(0, 1)
        pairs = zip(
            _kv_pairs(tiny_model, refined.model), _kv_pairs(tiny_model, fused.model), strict=True
        )
        for (w0, w_ref), (_, w_fused) in pairs:
            assert _rel(c_p @ w_fused.T, c_p @ w0.T) < 0.5 * _rel(c_p @ w_ref.T, c_p @ w0.T)
