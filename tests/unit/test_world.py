"""World: the ToyCanvas evaluation grid, retain splits and concept lookup errors."""

from __future__ import annotations

import json
from collections import Counter
from itertools import product

import pytest

from genunlearn.data import toycanvas as tc
from genunlearn.data.world import World
from genunlearn.types import Concept, GenUnlearnError


@pytest.fixture(scope="module")
def world() -> World:
    return World.toycanvas()


def _key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def test_grid_has_every_object_style_pair_once_and_balanced_colours(world):
    grid = world.grid()
    assert len(grid) == 80
    assert all(set(g) == {"object", "style", "colour"} for g in grid)
    assert sorted((g["object"], g["style"]) for g in grid) == sorted(product(tc.OBJECTS, tc.STYLES))
    counts = Counter(g["colour"] for g in grid)
    assert set(counts) == set(tc.COLOURS)
    assert set(counts.values()) == {80 // len(tc.COLOURS)}


@pytest.mark.parametrize("targets", [["star"], ["striped"], ["red"], ["star", "blue"]])
def test_split_partitions_the_grid(world, targets):
    grid = world.grid()
    has, without = world.split(targets)
    assert has and without
    assert sorted(map(_key, has + without)) == sorted(map(_key, grid))
    assert not set(map(_key, has)) & set(map(_key, without))
    assert all(any(v in targets for v in labels.values()) for labels in has)
    assert not any(v in targets for labels in without for v in labels.values())


def test_split_of_one_object_holds_all_its_styles(world):
    has, _ = world.split(["star"])
    assert sorted(h["style"] for h in has) == sorted(tc.STYLES)


def test_split_rejects_unknown_target(world):
    with pytest.raises(GenUnlearnError, match="dragon"):
        world.split(["dragon"])


def test_concept_lookup_and_near_match(world):
    assert world.concept("star") == Concept("star", "object")
    assert world.concept("wavy") == Concept("wavy", "style")
    with pytest.raises(GenUnlearnError) as e:
        world.concept("strar")
    msg = str(e.value)
    assert "'strar'" in msg and "Did you mean" in msg and "'star'" in msg


def test_text_says_styles_with_the_word_style(world):
    assert world.text("striped") == "striped style"
    assert world.text("star") == "star"
    assert world.text("red") == "red"


def test_concepts_by_kind(world):
    styles = world.concepts("style")
    assert [c.name for c in styles] == list(tc.STYLES)
    assert {c.kind for c in styles} == {"style"}
    assert len(world.concepts()) == len(tc.OBJECTS) + len(tc.STYLES) + len(tc.COLOURS)


def test_concepts_unknown_kind_lists_valid_kinds(world):
    with pytest.raises(GenUnlearnError) as e:
        world.concepts(kind="bogus")
    msg = str(e.value)
    assert "'bogus'" in msg
    for kind in ("object", "style", "colour"):
        assert kind in msg


def test_caption_matches_toycanvas(world):
    labels = {"object": "moon", "style": "dotted", "colour": "green"}
    assert world.caption(labels) == tc.caption("green", "moon", "dotted")


def test_load_round_trip_and_one_head_grid(tmp_path):
    p = tmp_path / "world.json"
    p.write_text(
        json.dumps({"name": "pets", "heads": {"class": ["cat", "dog"]}, "template": "a {class}"})
    )
    w = World.load(p)
    assert w.heads == {"class": ("cat", "dog")}
    assert w.grid() == [{"class": "cat"}, {"class": "dog"}]
    assert w.caption({"class": "dog"}) == "a dog"
    has, without = w.split(["cat"])
    assert has == [{"class": "cat"}] and without == [{"class": "dog"}]


def test_world_grid_is_the_toycanvas_grid(world):
    # Two implementations of the same evaluation grid must agree (order included).
    assert [(g["colour"], g["object"], g["style"]) for g in world.grid()] == tc.grid_prompts()


def test_prompt_is_the_in_distribution_phrase_of_each_kind():
    from genunlearn.data.world import World

    w = World.toycanvas()
    for names in w.heads.values():
        for name in names:
            p = w.prompt(name)
            assert name in p.split() and p.startswith("a ")
            # the phrase names only that concept
            others = [n for k, ns in w.heads.items() for n in ns if n != name]
            assert not any(o in p.split() for o in others)
    assert w.prompt("striped") == "a shape in striped style"


def test_world_without_phrases_falls_back_to_its_template_or_text(tmp_path):
    import json

    from genunlearn.data.world import World

    (tmp_path / "w.json").write_text(
        json.dumps({"name": "pets", "heads": {"class": ["cat", "dog"]}, "template": "a {class}"})
    )
    assert World.load(tmp_path / "w.json").prompt("dog") == "a dog"
