"""UCE's signature: only attn2 K/V change; the target's keys/values move to the guide's (erase) or
to the attribute mix (debias); preserved concepts' keys/values stay put."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.uce import _aligned, _rows


def _kv_pairs(base, erased):
    for name, layer in base.cross_attention_layers().items():
        new = erased.denoiser.get_submodule(name)
        for proj in ("to_k", "to_v"):
            yield getattr(layer, proj).weight, getattr(new, proj).weight


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_uce_changes_only_cross_attention_keys_and_values(tiny_model):
    run = gu.erase(tiny_model, "uce", "star")
    names = set(run.result.changed)
    kv = {
        f"unet.{n}.{p}.weight"
        for n in tiny_model.cross_attention_layers()
        for p in ("to_k", "to_v")
    }
    assert names == kv


def test_uce_maps_target_to_guide_and_keeps_preserved(tiny_model):
    task = gu.ErasureTask("star", anchor="circle", retain=("heart", "striped"))
    run = gu.erase(tiny_model, "uce", task, lam=1e-3, erase_scale=10.0, preserve_scale=10.0)
    with torch.no_grad():
        say = tiny_model.world.prompt  # how UCE says a world concept: "a star"
        (c_t,) = _rows(tiny_model, [say("star")], "last_to_end")
        (c_g,) = _rows(tiny_model, [say("circle")], "last_to_end")
        n = min(len(c_t), len(c_g))
        c_p = tiny_model.encode_prompt([say("heart"), say("striped")]).flatten(0, 1)
        for w_old, w_new in _kv_pairs(tiny_model, run.model):
            want = c_g[:n] @ w_old.T
            assert _rel(c_t[:n] @ w_new.T, want) < 0.1
            assert _rel(c_p @ w_new.T, c_p @ w_old.T) < 0.1
            # and the target really moved: before the edit it was not at the guide
            assert _rel(c_t[:n] @ w_old.T, want) > 0.1


def test_uce_debias_maps_target_to_the_attribute_mix_it_tuned(tiny_model):
    # shares of 2 images are 0, 0.5 or 1, so 0.7 / 0.3 is never reached: both rounds update
    task = gu.ErasureTask("star", retain=("heart",))
    kw = dict(lam=1e-3, erase_scale=10.0, preserve_scale=10.0, step_size=0.5)
    run = gu.erase(
        tiny_model, "uce", task, preset="smoke", mode="debias", attributes=("red", "blue"),
        ratios=(0.7, 0.3), **kw,
    )  # fmt: skip
    info = run.result.info
    assert info["iterations"] == 2 and len(info["ratio_history"]) == 3
    # the alphas are the accumulated share errors of the rounds that updated them
    want = torch.tensor([0.7, 0.3], dtype=torch.float64)
    errs = sum(want - torch.tensor(h[0], dtype=torch.float64) for h in info["ratio_history"][:2])
    alpha = torch.tensor(info["alphas"][0], dtype=torch.float64)
    assert torch.allclose(alpha, 0.5 * errs)
    assert alpha.abs().sum() > 0
    with torch.no_grad():
        say = tiny_model.world.prompt
        c_t, a_red = _aligned(tiny_model, [say("star")], [say("red")], "last_to_end")
        _, a_blue = _aligned(tiny_model, [say("star")], [say("blue")], "last_to_end")
        n = min(len(a_red), len(a_blue))
        mix = c_t[:n] + float(alpha[0]) * a_red[:n] + float(alpha[1]) * a_blue[:n]
        c_p = tiny_model.encode_prompt([say("heart")]).flatten(0, 1)
        for w_old, w_new in _kv_pairs(tiny_model, run.model):
            assert _rel(c_t[:n] @ w_new.T, mix @ w_old.T) < 0.1
            assert _rel(c_p @ w_new.T, c_p @ w_old.T) < 0.1
            assert _rel(c_t[:n] @ w_old.T, mix @ w_old.T) > 0.02  # the mix is not the identity
            # the edit moved the target onto the mix (an edit to the target's own values would not)
            moved, unedited = (
                _rel(c_t[:n] @ w_new.T, mix @ w_old.T),
                _rel(c_t[:n] @ w_old.T, mix @ w_old.T),
            )
            assert moved < 0.5 * unedited


def test_uce_rejects_guides_and_preserves_that_are_targets(tiny_model):
    # an anchor or retain concept that is a target is refused for every method (ErasureTask);
    # UCE's own check covers a guide given as a setting
    with pytest.raises(gu.GenUnlearnError, match=r"anchor 'star' is also a target"):
        gu.erase(tiny_model, "uce", gu.ErasureTask("star", anchor="star"))
    with pytest.raises(gu.GenUnlearnError, match=r"guide \['star'\] is also a target"):
        gu.erase(tiny_model, "uce", "star", guide="star")
    with pytest.raises(gu.GenUnlearnError, match=r"'star' is both a target and a retain"):
        gu.erase(tiny_model, "uce", gu.ErasureTask("star", retain=("heart", "star")))
    with pytest.raises(gu.GenUnlearnError, match="attributes .*'star'.* are also targets"):
        gu.erase(tiny_model, "uce", "star", mode="debias", attributes=("star", "heart"))


def test_uce_bad_settings_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="debias"):
        gu.erase(tiny_model, "uce", "star", mode="debais")
    with pytest.raises(gu.GenUnlearnError, match="at least two attributes"):
        gu.erase(tiny_model, "uce", "star", mode="debias")
    with pytest.raises(gu.GenUnlearnError, match="summing to 1"):
        gu.erase(tiny_model, "uce", "star", mode="debias", attributes=("red", "blue"),
                 ratios=(0.9, 0.9))  # fmt: skip
    with pytest.raises(gu.GenUnlearnError, match="one kind"):
        gu.erase(tiny_model, "uce", "star", preset="smoke", mode="debias",
                 attributes=("red", "striped"))  # fmt: skip


def test_uce_neighbour_guide_is_the_next_concept_of_the_same_kind(tiny_model):
    world = tiny_model.world
    for target in ("star", "striped"):
        names = world.heads[world.kind_of(target)]
        nxt = names[(names.index(target) + 1) % len(names)]
        run = gu.erase(tiny_model, "uce", target, guide="neighbour")
        assert run.result.info["guides"] == [world.prompt(nxt)]
    with pytest.raises(gu.GenUnlearnError, match="neighbour.*needs a concept of the model's world"):
        gu.erase(tiny_model, "uce", "a photo of a cat", guide="neighbour")
