"""ToyCanvas: purity of ``sample``, label/caption bookkeeping, colours and the prompt sets."""

from __future__ import annotations

import re
from collections import Counter
from itertools import product

import numpy as np
import pytest

from genunlearn.data import toycanvas as tc

CAPTION_RE = re.compile(r"^a (\w+) (\w+) in (\w+) style$")


def test_world_has_the_promised_vocabulary():
    assert len(tc.OBJECTS) >= 10 and len(set(tc.OBJECTS)) == len(tc.OBJECTS)
    assert len(tc.STYLES) >= 8 and len(set(tc.STYLES)) == len(tc.STYLES)
    assert len(tc.COLOURS) >= 5
    # Names the design promises (DESIGN.md §4).
    assert {"circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond"} <= set(
        tc.OBJECTS
    )
    assert {"flat", "striped", "dotted", "checkered", "gradient", "outlined"} <= set(tc.STYLES)
    # A name must identify its kind unambiguously.
    assert not (set(tc.OBJECTS) & set(tc.STYLES) or set(tc.OBJECTS) & set(tc.COLOURS))
    assert not set(tc.STYLES) & set(tc.COLOURS)


def test_sample_is_pure_and_deterministic():
    a, b = tc.sample(3, 17), tc.sample(3, 17)
    assert a.image.dtype == np.uint8 and a.image.shape == (32, 32, 3)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.labels == b.labels and a.caption == b.caption


def test_sample_differs_across_index_and_seed():
    images = [tc.sample(0, i).image.tobytes() for i in range(12)]
    assert len(set(images)) == len(images)
    assert tc.sample(0, 5).image.tobytes() != tc.sample(1, 5).image.tobytes()


def test_caption_follows_unlearncanvas_template_and_matches_labels():
    for i in range(20):
        s = tc.sample(7, i)
        m = CAPTION_RE.match(s.caption)
        assert m, s.caption
        assert m.groups() == (s.colour, s.object, s.style)
        assert s.labels == {"object": s.object, "style": s.style, "colour": s.colour}
    assert tc.caption("red", "star", "striped") == "a red star in striped style"


def test_labels_over_many_samples_cover_every_concept():
    _, labels, _ = tc.make_arrays(seed=0, n=200)
    assert set(labels[:, 0]) == set(range(len(tc.OBJECTS)))
    assert set(labels[:, 1]) == set(range(len(tc.STYLES)))
    assert set(labels[:, 2]) == set(range(len(tc.COLOURS)))


def test_make_arrays_labels_match_names_and_samples():
    imgs, labels, caps = tc.make_arrays(seed=2, n=6, start=4)
    assert imgs.shape == (6, 32, 32, 3) and imgs.dtype == np.uint8
    assert labels.shape == (6, 3) and labels.dtype == np.int64
    colours = tuple(tc.COLOURS)
    for i in range(6):
        s = tc.sample(2, 4 + i)
        assert np.array_equal(imgs[i], s.image)
        o, st, c = labels[i]
        assert (tc.OBJECTS[o], tc.STYLES[st], colours[c]) == (s.object, s.style, s.colour)
        assert caps[i] == s.caption


def _saturated_mean(img: np.ndarray, top: int = 20) -> np.ndarray:
    """Mean RGB of the ``top`` most saturated pixels (the object's interior for flat style)."""
    px = img.reshape(-1, 3).astype(np.float64)
    sat = px.max(1) - px.min(1)
    return px[np.argsort(sat)[-top:]].mean(0)


@pytest.mark.parametrize("colour", list(tc.COLOURS))
@pytest.mark.parametrize("obj", ["circle", "star"])
def test_sample_labelled_flat_object_has_requested_colour(colour, obj):
    img = tc.sample_labelled(obj, "flat", colour, seed=0, index=1)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    got = _saturated_mean(img)
    want = np.asarray(tc.COLOURS[colour], dtype=np.float64)
    # The renderer jitters each channel by at most 15; interior pixels are not anti-aliased.
    assert np.abs(got - want).max() <= 16, (got, want)
    nearest = min(tc.COLOURS, key=lambda c: np.linalg.norm(np.asarray(tc.COLOURS[c]) - got))
    assert nearest == colour


def test_sample_labelled_is_deterministic_and_depends_on_labels():
    a = tc.sample_labelled("heart", "striped", "blue", seed=1, index=3)
    b = tc.sample_labelled("heart", "striped", "blue", seed=1, index=3)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != tc.sample_labelled("heart", "striped", "red", 1, 3).tobytes()
    assert a.tobytes() != tc.sample_labelled("heart", "striped", "blue", 1, 4).tobytes()


@pytest.mark.parametrize(
    "triple", [("blob", "flat", "red"), ("star", "fuzzy", "red"), ("star", "flat", "teal")]
)
def test_render_rejects_unknown_names(triple):
    with pytest.raises(KeyError):
        tc.render(*triple, np.random.default_rng(0))


def test_outlined_style_has_fewer_coloured_pixels_than_flat():
    # Same jitter stream up to the fill, so the shape is identical; outlined cuts the interior out.
    def coloured(style):
        img = tc.render("circle", style, "blue", np.random.default_rng(5)).astype(int)
        return int(((img.max(2) - img.min(2)) > 60).sum())

    assert 0 < coloured("outlined") < 0.8 * coloured("flat")


def test_erode_shrinks_a_square_by_k_on_each_side():
    mask = np.zeros((12, 12), dtype=bool)
    mask[2:9, 3:10] = True  # 7 x 7 square
    out = tc._erode(mask, 2)
    assert out.shape == mask.shape and out.dtype == bool
    expected = np.zeros_like(mask)
    expected[4:7, 5:8] = True  # 3 x 3: each side loses k=2 pixels
    assert np.array_equal(out, expected)
    assert not (out & ~mask).any()  # erosion never adds pixels


def test_erode_treats_outside_as_empty_and_k0_is_identity():
    full = np.ones((6, 6), dtype=bool)
    out = tc._erode(full, 1)
    assert not out[0].any() and not out[-1].any() and not out[:, 0].any() and not out[:, -1].any()
    assert out[1:-1, 1:-1].all()
    rng = np.random.default_rng(0)
    m = rng.random((9, 7)) > 0.4
    assert np.array_equal(tc._erode(m, 0), m)


def test_erode_removes_thin_lines():
    mask = np.zeros((10, 10), dtype=bool)
    mask[5, :] = True
    assert not tc._erode(mask, 1).any()


def test_all_triples_is_the_full_product_in_colour_object_style_order():
    triples = tc.all_triples()
    assert len(triples) == len(set(triples)) == len(tc.OBJECTS) * len(tc.STYLES) * len(tc.COLOURS)
    assert set(triples) == set(product(tc.COLOURS, tc.OBJECTS, tc.STYLES))


def test_grid_prompts_cover_each_pair_once_with_balanced_colours():
    grid = tc.grid_prompts()
    assert len(grid) == len(tc.OBJECTS) * len(tc.STYLES)
    pairs = [(o, s) for _, o, s in grid]
    assert sorted(pairs) == sorted(product(tc.OBJECTS, tc.STYLES))
    counts = Counter(c for c, _, _ in grid)
    assert set(counts) == set(tc.COLOURS)
    assert len(set(counts.values())) == 1
    assert tc.grid_prompts(5) == grid[:5]


@pytest.mark.parametrize("target", ["star", "striped", "red"])
def test_concept_split_partitions_all_triples(target):
    pos = {"colour": 0, "object": 1, "style": 2}[tc.kind_of(target)]
    split = tc.concept_split(target)
    has, without = split["target"], split["in_domain"]
    assert has and all(t[pos] == target for t in has)
    assert all(t[pos] != target for t in without)
    assert all(t[pos] != target for t in split["cross_domain"])
    assert not set(has) & set(without)
    assert sorted(has + without) == sorted(tc.all_triples())


def test_concept_split_and_kind_of_unknown():
    assert tc.kind_of("star") == "object" and tc.kind_of("wavy") == "style"
    assert tc.kind_of("purple") == "colour" and tc.kind_of("dragon") is None
    with pytest.raises(KeyError):
        tc.concept_split("dragon")


def test_every_object_style_pair_draws_a_visible_object():
    for colour, obj, style in tc.grid_prompts():
        img = tc.sample_labelled(obj, style, colour, seed=0, index=0).astype(float)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        bg = np.median(border, axis=0)
        visible = (np.abs(img - bg).max(axis=2) > 40).sum()
        assert visible >= 20, (obj, style, colour, visible)
