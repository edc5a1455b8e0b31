"""MACE's signature: CFR aligns the words around the target, one attention LoRA per concept,
closed-form fusion of many concepts at once (>= 10), only attn2 K/V change."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.attention import attention_probs, concept_attention_loss, position_mask
from genunlearn.data.toycanvas import sample_labelled_with_mask
from genunlearn.methods.mace import _aligned, concept_pairs

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
