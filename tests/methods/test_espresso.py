"""Espresso signature tests: no T2I weight changes, the filter blocks exactly the images CLIP puts
closer to the unacceptable text, fine-tuning pushes the two texts apart while the preservation term
holds the embeddings near the original, and metrics count blocked images as erased."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import genunlearn as gu
from genunlearn import GenUnlearnError
from genunlearn.models.clip import load_clip, toy_clip_dir
from genunlearn.models.filtered import ClipConceptFilter

pytestmark = pytest.mark.skipif(
    not (toy_clip_dir() / "config.json").is_file(), reason="toy-clip weights are not committed"
)
PROMPTS = ["a red star in flat style", "a blue circle in striped style"]


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def run(tiny_model):
    return gu.erase(tiny_model, "espresso", "star", preset="smoke", seed=0)


def test_no_weight_of_the_t2i_model_changes(tiny_model, run):
    before = _params(tiny_model)
    after = _params(run.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert run.result.changed == {}
    assert run.result.addon.kind == "espresso"
    # the artifact is CLIP tensors: text side and projections, never the frozen vision tower
    names = set(run.result.addon.tensors)
    assert names and not any(n.startswith("vision_model.") for n in names)
    assert any(n.startswith("text_model.") for n in names)
    assert tiny_model.output_filters == [] and len(run.model.output_filters) == 1


def test_filter_blocks_exactly_images_closer_to_the_unacceptable_text(tiny_model, run):
    f = run.model.output_filters[0]
    base = tiny_model.sample(PROMPTS, n=3, seed=7)
    assert tiny_model.last_blocked is None
    out = run.model.sample(PROMPTS, n=3, seed=7)
    blocked = run.model.last_blocked
    # recompute the decision from the CLIP embeddings by hand
    texts = f.clip.encode_texts([*f.unacceptable, f.acceptable])
    sim = f.clip.encode_images(base) @ texts.T
    assert torch.equal(blocked, sim[:, 0] > sim[:, 1])
    assert bool((out[blocked] == 0).all())
    assert torch.equal(out[~blocked], base[~blocked])


def test_filter_margin_sign_decides(tiny_model):
    clip = load_clip("toy-clip")
    x = tiny_model.sample(PROMPTS, n=2, seed=1)
    a = ClipConceptFilter(clip, ["a star"], "a shape")
    b = ClipConceptFilter(clip, ["a shape"], "a star")  # the two texts swapped
    _, blocked_a = a(x)
    _, blocked_b = b(x)
    margin = a.margin(x)
    assert torch.equal(blocked_a, margin > 0)
    assert torch.equal(blocked_b, margin < 0)


def test_separation_pushes_the_texts_apart_and_preserve_limits_drift(tiny_model):
    # on the tiny model's random-quality images the pairing term cannot tell the two sides apart
    # (it pulls the texts together), so the separation and preservation terms show alone
    orig = load_clip("toy-clip")
    kw = dict(preset="smoke", seed=0, epochs=3, n_images=4, lr=3e-3)
    free = gu.erase(tiny_model, "espresso", "star", separation=5.0, preserve=0.0, **kw)
    held = gu.erase(tiny_model, "espresso", "star", separation=5.0, preserve=20.0, **kw)
    t_free, t_held = free.model.output_filters[0].texts, held.model.output_filters[0].texts
    t0 = orig.encode_texts(["a star", "a shape"])
    assert (t_free[0] - t_free[1]).norm() > (t0[0] - t0[1]).norm() + 0.05
    assert (t_held - t0).norm() < (t_free - t0).norm()


def test_metrics_count_blocked_images_as_erased_and_report_the_share(tiny_model):
    m = tiny_model.copy()
    m.output_filters.append(lambda x: (torch.zeros_like(x), torch.ones(len(x), dtype=torch.bool)))
    s = gu.evaluate(m, "star", protocol="unlearncanvas", n_per_prompt=1, fid=False)
    assert s["ua"] == 1.0 and s["ira"] == 0.0 and s["cra"] == 0.0
    assert s["filtered_target"] == 1.0 and s["filtered_retain"] == 1.0


def test_bad_inputs_are_clear_errors(tiny_model):
    m = tiny_model.copy()
    m.world = None
    with pytest.raises(GenUnlearnError, match="clip='/path"):
        gu.erase(m, "espresso", "a grumpy cat", preset="smoke")
    with pytest.raises(GenUnlearnError, match="acceptable="):
        gu.erase(m, "espresso", "a grumpy cat", preset="smoke", clip=str(toy_clip_dir()))
    with pytest.raises(GenUnlearnError, match="no directory"):
        gu.erase(tiny_model, "espresso", "star", preset="smoke", clip="/nonexistent/clip")


def _renders(objects, seed, n):
    from genunlearn.data import toycanvas as tc

    colours = list(tc.COLOURS)
    imgs = [
        tc.sample_labelled(objects[i % len(objects)], tc.STYLES[i % len(tc.STYLES)],
                           colours[(i // 2) % len(colours)], seed, i)
        for i in range(n)
    ]  # fmt: skip
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


def test_pairing_term_pulls_each_side_to_its_own_text(tiny_model, monkeypatch):
    """With clean renders as the training images (the tiny model's own are noise) and a nearly
    synonymous acceptable text, the contrastive term alone must separate star images from other
    shapes: star images move towards "a star", the others towards the acceptable text."""
    import genunlearn.methods.espresso as esp

    others = ["circle", "square", "heart", "moon"]

    def images(model, prompts, labels, n, seed):
        objects = ["star"] if "star" in prompts[0] else others
        return _renders(objects, 1, n), torch.zeros(n, dtype=torch.long)

    monkeypatch.setattr(esp, "_images", images)
    acc = "a star shape"
    run = gu.erase(tiny_model, "espresso", "star", preset="smoke", seed=0, acceptable=acc,
                   separation=0.0, preserve=0.0, epochs=3, n_images=16, lr=1e-4,
                   weight_decay=0.0)  # fmt: skip
    stars, shapes = _renders(["star"], 2, 16), _renders(others, 2, 16)  # held out

    def gap(f):
        return float(f.margin(stars).mean() - f.margin(shapes).mean())

    before = gap(ClipConceptFilter(load_clip("toy-clip"), ["a star"], acc))
    assert gap(run.model.output_filters[0]) > 2 * before > 0
