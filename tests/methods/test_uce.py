"""UCE's signature: only attn2 K/V change; the target's keys/values move to the guide's,
preserved concepts' keys/values stay put."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.uce import _rows


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
        (c_t,) = _rows(tiny_model, ["star"], "last_to_end")
        (c_g,) = _rows(tiny_model, ["circle"], "last_to_end")
        n = min(len(c_t), len(c_g))
        c_p = tiny_model.encode_prompt(["heart", "striped style"]).flatten(0, 1)
        for name, layer in tiny_model.cross_attention_layers().items():
            new = run.model.denoiser.get_submodule(name)
            for proj in ("to_k", "to_v"):
                w_old = getattr(layer, proj).weight
                w_new = getattr(new, proj).weight
                want = c_g[:n] @ w_old.T
                got = c_t[:n] @ w_new.T
                assert (got - want).norm() / want.norm() < 0.1
                kept_old, kept_new = c_p @ w_old.T, c_p @ w_new.T
                assert (kept_new - kept_old).norm() / kept_old.norm() < 0.1
                # and the target really moved: before the edit it was not at the guide
                assert (c_t[:n] @ w_old.T - want).norm() / want.norm() > 0.1


def test_uce_bad_mode_is_a_clear_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="debias"):
        gu.erase(tiny_model, "uce", "star", mode="debias")
