"""Forget / relabel / remain caption sets of data-based unlearning methods."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from genunlearn.core.concept_sets import caption_sets, relabel_concept
from genunlearn.data.world import World
from genunlearn.types import ErasureTask, GenUnlearnError

TOY = SimpleNamespace(world=World.toycanvas())


@pytest.mark.parametrize("target", ["star", "striped", "red"])
def test_world_sets_split_on_the_target_and_relabel_aligned(target):
    forget, relabel, remain = caption_sets(TOY, ErasureTask(target))
    swap = relabel_concept(TOY.world, target)
    kind = TOY.world.kind_of(target)
    assert swap != target and TOY.world.kind_of(swap) == kind
    words = lambda c: set(c.split())  # noqa: E731
    assert forget and all(target in words(c) for c in forget)
    assert remain and not any(target in words(c) for c in remain)
    assert len(relabel) == len(forget)
    for f, r in zip(forget, relabel, strict=True):
        assert r == " ".join(swap if w == target else w for w in f.split())
    # every label combination with the target, not only the evaluation grid's
    n_other = 1
    for k, names in TOY.world.heads.items():
        n_other *= len(names) if k != kind else 1
    assert len(forget) == n_other


def test_anchor_and_retain_choose_the_relabel_and_remain_sets():
    forget, relabel, remain = caption_sets(TOY, ErasureTask("star", anchor="moon", retain=["ring"]))
    assert all("moon" in r and "star" not in r for r in relabel)
    assert all("ring" in r for r in remain)
    with pytest.raises(GenUnlearnError, match="must be of kind 'object' like the target"):
        caption_sets(TOY, ErasureTask("star", anchor="striped"))


def test_free_text_targets_use_anchor_and_retain_prompts():
    plain = SimpleNamespace(world=None)
    forget, relabel, remain = caption_sets(plain, ErasureTask("a nude person", anchor="a person"))
    assert forget == ["a nude person"] and relabel == ["a person"] and remain == ["a person"]
    task = ErasureTask("van gogh", retain=["a cat", "a dog"])
    assert caption_sets(plain, task) == (["van gogh"], [""], ["a cat", "a dog"])


def test_max_prompts_spreads_evenly():
    forget, relabel, remain = caption_sets(TOY, ErasureTask("red"), max_prompts=10)
    assert len(forget) == len(relabel) == len(remain) == 10
    assert len({c.split()[2] for c in forget}) > 3  # several objects, not the first ten rows


def test_neutral_relabels_to_the_worlds_generic_concept_where_its_kind_has_one():
    world = TOY.world
    # ToyCanvas: the untextured style is the generic one; objects and colours have none
    assert world.neutral == {"style": "flat"}
    assert relabel_concept(world, "noisy", neutral=True) == "flat"
    assert relabel_concept(world, "noisy") == "wavy"  # the next style, without neutral
    assert relabel_concept(world, "flat", neutral=True) == relabel_concept(world, "flat")
    assert relabel_concept(world, "star", neutral=True) == relabel_concept(world, "star")
    assert relabel_concept(world, "noisy", anchor="dotted", neutral=True) == "dotted"
    _, relabel, _ = caption_sets(TOY, ErasureTask("checkered"), neutral=True)
    assert all("flat style" in r and "checkered" not in r for r in relabel)


def test_a_loaded_world_keeps_its_neutral_concepts(tmp_path):
    import json

    spec = {"name": "mine", "heads": {"class": ["a", "b", "c"]}, "template": "a {class}"}
    (tmp_path / "w.json").write_text(json.dumps(spec | {"neutral": {"class": "c"}}))
    world = World.load(tmp_path / "w.json")
    assert relabel_concept(world, "a", neutral=True) == "c"
    (tmp_path / "w.json").write_text(json.dumps(spec))
    assert relabel_concept(World.load(tmp_path / "w.json"), "a", neutral=True) == "b"
