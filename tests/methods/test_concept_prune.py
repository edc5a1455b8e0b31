"""ConceptPrune's signature: WANDA-scored skilled weights of ff.net.2 are zeroed, never more than
the configured fraction, and only where the target outscores the base."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.concept_prune import (
    ConceptPruneConfig,
    column_norms,
    paired_prompts,
    pruned_layers,
    skilled_mask,
)


def test_prunes_only_ffn_weights_to_zero_within_the_fraction(tiny_model):
    cap = 0.03
    # a large skill ratio over every step would select far more than the cap without it
    run = gu.erase(
        tiny_model, "concept_prune", "star", preset="smoke", skill_ratio=0.5, union_steps=3,
        max_fraction=cap,
    )  # fmt: skip
    layers = {f"unet.{n}.weight": m.weight for n, m in pruned_layers(tiny_model).items()}
    assert run.result.changed and set(run.result.changed) <= set(layers)
    total_new_zeros = 0
    for name, new in run.result.changed.items():
        old = layers[name]
        moved = new != old
        assert (new[moved] == 0).all()  # pruning only ever sets weights to zero
        assert int(moved.sum()) <= int(cap * old.numel())
        total_new_zeros += int(moved.sum())
    assert total_new_zeros > 0
    assert run.result.info["pruned_fraction_ffn"] <= cap


def test_skilled_weights_are_top_wanda_scores_that_beat_the_base():
    w = torch.ones(4, 10)
    target = torch.ones(1, 10)
    base = torch.ones(1, 10)
    target[0, 3] = 5.0  # column 3 fires for the target prompts ...
    target[0, 7] = 4.0  # ... and column 7 too, but it fires even more for the base prompts
    base[0, 7] = 9.0
    cfg = ConceptPruneConfig(skill_ratio=0.2, union_steps=1, max_fraction=1.0)
    mask = skilled_mask(w, target, base, cfg)
    assert mask[:, 3].all() and not mask[:, 7].any()
    assert int(mask.sum()) == 4  # top-2 per row, of which only column 3 beats the base
    # a small weight is not skilled even when its input fires (the score is |W| * ||X||)
    w[:, 3] = 0.01
    assert not skilled_mask(w, target, base, cfg)[:, 3].any()


def test_the_cap_keeps_the_weights_selected_at_most_steps():
    w = torch.ones(2, 10)
    target = torch.ones(3, 10)
    base = torch.zeros(3, 10)
    target[:, 0] = 5.0  # chosen at all three steps
    target[0, 1] = 4.0  # chosen at one step only
    cfg = ConceptPruneConfig(skill_ratio=0.2, union_steps=3, max_fraction=0.1)
    mask = skilled_mask(w, target, base, cfg)
    assert int(mask.sum()) == 2 and mask[:, 0].all()


@pytest.mark.parametrize(
    ("target", "drop"),
    [("striped", ("in", "striped", "style")), ("red", ("red",)), ("star", None)],
)
def test_base_prompts_are_the_captions_without_the_concept(tiny_model, target, drop):
    """The paper's pairs ("a cat" / "a cat in the style of Van Gogh"), not a sibling concept."""
    targets, bases = paired_prompts(tiny_model, gu.ErasureTask(target), ConceptPruneConfig())
    world = tiny_model.world
    has, _ = world.split([target])
    assert targets == [world.caption(lab) for lab in has]
    others = {c for k, names in world.heads.items() for c in names if c != target}
    for t, b in zip(targets, bases, strict=True):
        assert target in t.split() and target not in b.split()
        assert not (set(b.split()) & others) - set(t.split())  # no other concept comes in
        if drop is None:  # an object leaves the world's generic noun in its place
            assert b == t.replace(f" {target} ", " shape ")
        else:
            assert b.split() == [w for w in t.split() if w not in drop]


def test_the_base_prompt_of_a_one_attribute_world_is_the_empty_prompt():
    from genunlearn.data.world import World

    world = World("pets", {"class": ("cat", "dog")}, "a photo of a {class}")
    assert world.caption_without({"class": "cat"}, ["class"]) == ""


def test_erase_scores_the_target_prompts_against_the_base_prompts(tiny_model, monkeypatch):
    """Column 3 fires for the target prompts, column 7 for the base prompts: only column 3's
    weights are pruned (swapping the roles would prune column 7's)."""
    from genunlearn.methods import concept_prune

    tp, bp = ("a red star in flat style",), ("a red shape in flat style",)

    def fake_norms(model, prompts, cfg):
        col = 3 if prompts == list(tp) else 7
        out = {}
        for name, layer in pruned_layers(model, cfg.hook_module).items():
            x = torch.full((5, layer.in_features), 1.0)
            x[:, col] = 1e3
            out[name] = x
        return out

    monkeypatch.setattr(concept_prune, "column_norms", fake_norms)
    run = gu.erase(
        tiny_model, "concept_prune", "star", preset="smoke", target_prompts=tp, base_prompts=bp,
        skill_ratio=0.01, max_fraction=1.0, union_steps=2,
    )  # fmt: skip
    assert run.result.changed
    for name, new in run.result.changed.items():
        old = dict(tiny_model.named_parameters())[name]
        moved = (new != old).nonzero()[:, 1].unique().tolist()
        assert moved == [3]


def test_column_norms_are_recorded_per_denoising_step(tiny_model):
    cfg = ConceptPruneConfig(steps=3)
    norms = column_norms(tiny_model, ["a red star in flat style"], cfg)
    for name, layer in pruned_layers(tiny_model).items():
        assert norms[name].shape == (3, layer.in_features)
        assert (norms[name] >= 0).all() and norms[name].sum() > 0


def test_fraction_out_of_range_is_a_clear_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match=r"skill_ratio must be in \(0, 1\]"):
        gu.erase(tiny_model, "concept_prune", "star", preset="smoke", skill_ratio=1.5)
    with pytest.raises(gu.GenUnlearnError, match=r"max_fraction must be in \(0, 1\]"):
        gu.erase(tiny_model, "concept_prune", "star", preset="smoke", max_fraction=0)


def test_hook_module_selects_the_pruned_layers(tiny_model):
    run = gu.erase(
        tiny_model, "concept_prune", "star", preset="smoke", hook_module="attn_val",
        skill_ratio=0.2, max_fraction=0.2,
    )  # fmt: skip
    values = {f"unet.{n}.weight" for n in pruned_layers(tiny_model, "attn_val")}
    assert values and all(n.endswith("attn2.to_v.weight") for n in values)
    assert run.result.changed and set(run.result.changed) <= values
    assert all((w == 0).any() for w in run.result.changed.values())


def test_unknown_hook_module_names_the_valid_ones(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="attn_val"):
        gu.erase(tiny_model, "concept_prune", "star", preset="smoke", hook_module="ffn3")
