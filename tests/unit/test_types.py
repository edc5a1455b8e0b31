"""ErasureTask validation and AttackResult bookkeeping."""

from __future__ import annotations

import pytest

from genunlearn.types import AttackResult, ErasureTask, GenUnlearnError


@pytest.mark.parametrize("bad", ["", "   ", [], (), ["star", ""], [3], None])
def test_erasure_task_rejects_empty_or_non_text_targets(bad):
    with pytest.raises(GenUnlearnError, match="target"):
        ErasureTask(target=bad)


def test_erasure_task_list_target_becomes_tuple():
    t = ErasureTask(target=["star", "heart"], retain=["circle"])
    assert t.target == ("star", "heart") and t.targets == ("star", "heart")
    assert t.retain == ("circle",)
    assert hash(t) == hash(ErasureTask(target=("star", "heart"), retain=("circle",)))


def test_single_target_targets_is_a_one_tuple():
    assert ErasureTask("star").targets == ("star",)


@pytest.mark.parametrize(
    "task",
    [
        ErasureTask("star"),
        ErasureTask(["star", "red"], anchor="circle", retain=["a blue circle"]),
        ErasureTask("a photo of a dog", anchor="a photo of a cat"),
    ],
)
def test_erasure_task_dict_round_trip(task):
    d = task.to_dict()
    assert set(d) == {"target", "anchor", "retain"}
    assert ErasureTask.from_dict(d) == task


def test_to_dict_is_json_friendly():
    d = ErasureTask(["star", "red"], retain=["x"]).to_dict()
    assert d == {"target": ["star", "red"], "anchor": None, "retain": ["x"]}


def _result(pre, post):
    n = len(pre)
    return AttackResult(
        attack="a",
        target="star",
        prompts=[f"p{i}" for i in range(n)],
        adversarial_prompts=[f"q{i}" for i in range(n)],
        pre_success=list(pre),
        success=list(post),
    )


def test_asr_counts_success_before_or_after():
    # Prompt 0 already succeeded but the attack's final attempt failed: it still counts.
    r = _result([True, False, False, False], [False, True, False, False])
    assert r.pre_asr == 0.25
    assert r.asr == 0.5


def test_asr_is_never_below_pre_asr():
    pres = [[True, True, False], [False, False, False], [True, False, True]]
    posts = [[False, False, False], [True, False, True], [False, True, True]]
    for pre, post in zip(pres, posts, strict=True):
        r = _result(pre, post)
        assert r.asr >= r.pre_asr
        assert r.asr == sum(a or b for a, b in zip(pre, post, strict=True)) / len(pre)


def test_empty_attack_result_and_summary():
    r = _result([], [])
    assert r.asr == 0.0 and r.pre_asr == 0.0
    r = _result([False, True], [True, True])
    r.cost = {"seconds": 2.0}
    s = r.summary()
    assert s["asr"] == 1.0 and s["pre_asr"] == 0.5 and s["n_prompts"] == 2
    assert s["cost_seconds"] == 2.0


def test_mismatched_success_lengths_raise():
    r = _result([True, False], [True])
    with pytest.raises(ValueError):
        _ = r.asr


def test_single_string_retain_is_not_split_into_characters():
    try:
        task = ErasureTask("star", retain="circle")
    except GenUnlearnError:
        return  # rejecting a bare string is an acceptable fix too
    assert task.to_dict()["retain"] == ["circle"]
    assert ErasureTask.from_dict(task.to_dict()) == task
