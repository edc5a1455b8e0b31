"""The memorizing testbed variant: a new directory, a recorded recipe, pairs that match, loadable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genunlearn as gu
from genunlearn.data import toycanvas
from genunlearn.models.toy_variants import (
    MemorizeRecipe,
    control_prompts,
    memorization_record,
    memorized_pairs,
    train_memorizing,
)

RECIPE = MemorizeRecipe(k=3, steps=2, batch=4, n_ordinary=8, n_controls=4)


@pytest.fixture(scope="module")
def variant(tiny_model, tmp_path_factory):
    return train_memorizing(tmp_path_factory.mktemp("mem") / "v", tiny_model, RECIPE, False)


def test_variant_is_a_loadable_pipeline_with_its_recipe(variant, tiny_model):
    rec = json.loads((variant / "memorize.json").read_text())
    assert rec["recipe"]["k"] == 3 and rec["base"]["hash"] == tiny_model.base_hash
    model = gu.load_model(variant)
    assert model.world is not None and model.evaluator is not None
    base = dict(tiny_model.named_parameters())
    new = dict(model.named_parameters())
    unet_changed = [n for n in new if n.startswith("unet.") and not torch.equal(new[n], base[n])]
    assert unet_changed, "fine-tuning changed no UNet weight"
    assert any(n.startswith("text_encoder.") and not torch.equal(new[n], base[n]) for n in new)
    assert all(torch.equal(new[n], base[n]) for n in new if n.startswith("vae."))
    assert not (variant.parent / "v.partial").exists()


def test_memorized_pairs_are_the_recorded_images_with_unique_captions(variant):
    pairs = memorized_pairs(variant)
    rec = memorization_record(variant)
    assert len(pairs) == 3
    prompts = [p for p, _ in pairs]
    assert len(set(prompts)) == 3
    for i, (p, img) in enumerate(pairs):
        s = toycanvas.sample(rec["data_seed"], i)
        assert p.startswith(s.caption + ", by ")
        assert img.shape == (3, 32, 32)
        want = torch.from_numpy(s.image.astype(np.float32) / 255).permute(2, 0, 1)
        assert torch.allclose(img, want)
    controls = control_prompts(variant)
    assert len(controls) == 4 and not set(controls) & set(prompts)
    tags = {p.rsplit(", by ", 1)[1] for p in prompts}
    assert not tags & {c.rsplit(", by ", 1)[1] for c in controls}  # never-trained tags
    assert control_prompts(variant, tagged=False)[0] == prompts[0].rsplit(", by ", 1)[0]


def test_variant_is_deterministic_and_never_overwrites(variant, tiny_model, tmp_path):
    again = train_memorizing(tmp_path / "again", tiny_model, RECIPE, False)
    a = dict(gu.load_model(variant).named_parameters())
    b = dict(gu.load_model(again).named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(gu.GenUnlearnError, match="already exists and is not empty"):
        train_memorizing(variant, tiny_model, RECIPE, False)
    with pytest.raises(gu.GenUnlearnError, match="not a memorizing variant"):
        memorized_pairs(tiny_model)
