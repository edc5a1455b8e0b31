"""The memorizing testbed variant: a new directory, a recorded recipe, pairs that match, loadable;
memorized images that no caption describes (the ordinary render of their labels plus a mark)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genunlearn as gu
from genunlearn.data import toycanvas
from genunlearn.data.memorized import control_prompts, memorization_record, memorized_pairs
from genunlearn.testbed.memorize import MemorizeRecipe, memorized_images, train_memorizing

RECIPE = MemorizeRecipe(k=3, steps=2, batch=4, n_ordinary=8, n_controls=4, n_anchor=4)


@pytest.fixture(scope="module")
def variant(tiny_model, tmp_path_factory):
    return train_memorizing(tmp_path_factory.mktemp("mem") / "v", tiny_model, RECIPE, False)


def test_variant_is_a_loadable_pipeline_with_its_recipe(variant, tiny_model):
    rec = json.loads((variant / "memorize.json").read_text())
    assert rec["recipe"]["k"] == 3 and rec["base"]["hash"] == tiny_model.base_hash
    assert rec["recipe"]["novel"] == "mark" and rec["recipe"]["mark_radius"] == RECIPE.mark_radius
    assert rec["recipe"]["anchor_share"] == RECIPE.anchor_share > 0
    assert all(m["mark"]["radius"] == RECIPE.mark_radius for m in rec["memorized"])
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
    images, _, _ = memorized_images(RECIPE, rec["data_seed"])
    for i, (p, img) in enumerate(pairs):
        s = toycanvas.sample(rec["data_seed"], i)
        assert p.startswith(s.caption + ", by ")
        assert {k: rec["memorized"][i][k] for k in s.labels} == s.labels
        assert img.shape == (3, 32, 32)
        want = torch.from_numpy(images[i].astype(np.float32) / 255).permute(2, 0, 1)
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


def _yx():
    return np.mgrid[0:32, 0:32] + 0.5


@pytest.mark.parametrize("radius", [4.0, 5.0])
def test_marked_image_is_the_plain_render_plus_a_mark_no_caption_names(radius):
    recipe = MemorizeRecipe(k=12, mark_radius=radius)
    images, labels, marks = memorized_images(recipe, 1_000)
    y, x = _yx()
    corners = {radius + 1.0, 31.0 - radius}
    for i, (img, lab, mark) in enumerate(zip(images, labels, marks, strict=True)):
        assert lab == toycanvas.sample(1_000, i).labels
        plain, region = toycanvas.sample_labelled_with_mask(
            lab["object"], lab["style"], lab["colour"], 1_000, i
        )
        cy, cx = mark["centre"]
        assert {cy, cx} <= corners and mark["colour"] != lab["colour"]
        d = np.hypot(y - cy, x - cx)
        changed = (img != plain).any(-1)
        assert changed.sum() > 20  # a visible mark ...
        assert not (changed & (d > radius + 0.5)).any()  # ... inside its disc only
        assert not (changed & (region == 1)).any()  # the object is untouched
        inner = (d <= radius - 0.5) & (region == 0)
        want = toycanvas.COLOURS[mark["colour"]]
        assert inner.any() and (img[inner] == want).all()
        # the corner farthest from the object's centroid
        oy, ox = (region * y).sum() / region.sum(), (region * x).sum() / region.sum()
        far = max(((a, b) for a in corners for b in corners),
                  key=lambda c: (c[0] - oy) ** 2 + (c[1] - ox) ** 2)  # fmt: skip
        assert (cy, cx) == far
    again, _, _ = memorized_images(recipe, 1_000)
    assert np.array_equal(images, again)


def test_novel_none_keeps_plain_renders_and_bad_settings_fail(tiny_model, tmp_path):
    images, labels, marks = memorized_images(MemorizeRecipe(k=3, novel="none"), 1_000)
    assert marks == [None] * 3
    for i in range(3):
        assert np.array_equal(images[i], toycanvas.sample(1_000, i).image)
    marked, _, _ = memorized_images(MemorizeRecipe(k=3), 1_000)
    assert all((marked[i] != images[i]).any() for i in range(3))
    for bad in ({"novel": "frame"}, {"mark_radius": 12.0}):
        with pytest.raises(gu.GenUnlearnError, match="novel must be one of"):
            train_memorizing(tmp_path / "bad", tiny_model, MemorizeRecipe(k=2, **bad), False)
    for bad in ({"anchor_share": -0.1}, {"mem_share": 0.6, "anchor_share": 0.4}):
        with pytest.raises(gu.GenUnlearnError, match="anchor_share"):
            train_memorizing(tmp_path / "bad", tiny_model, MemorizeRecipe(k=2, **bad), False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_toy_evaluator_still_reads_the_labels_of_marked_images():
    images, labels, _ = memorized_images(MemorizeRecipe(k=60), 1_000)
    ev = gu.load_evaluator("toy-sd")
    pred = ev.predict(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    for kind in ("object", "style", "colour"):
        acc = np.mean([p == lab[kind] for p, lab in zip(pred[kind], labels, strict=True)])
        assert acc >= 0.95, (kind, acc)
