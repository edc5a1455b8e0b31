"""UnlearnDiffAtk's signature: k tokens prepended, timestep blocks, stop at the first success."""

from __future__ import annotations

import dataclasses

import pytest

import genunlearn as gu
from genunlearn.attacks import unlearndiffatk
from genunlearn.types import Capability


def test_paper_timestep_blocks():
    assert unlearndiffatk.block_timesteps(1000, 50) == list(range(10, 1000, 20))


def test_adversarial_prompt_is_k_tokens_then_the_prompt(tiny_model, forced_judge):
    calls = forced_judge(unlearndiffatk, pre=False, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3, k=2)
    assert res.pre_asr == res.asr == 0.0
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        assert a.endswith(p) and len(a.split()) == len(p.split()) + 2
    assert calls == [1, 1] * 3  # every timestep block (2) of every prompt was checked


def test_suffix_position(tiny_model, forced_judge):
    forced_judge(unlearndiffatk, pre=False, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=2,
                    position="suffix")  # fmt: skip
    assert all(a.startswith(p) for p, a in zip(res.prompts, res.adversarial_prompts, strict=True))


def test_stops_at_first_success_and_skips_pre_successes(tiny_model, forced_judge):
    calls = forced_judge(unlearndiffatk, pre=False, post=True)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3)
    assert calls == [1, 1, 1] and res.asr == 1.0 and res.pre_asr == 0.0
    calls = forced_judge(unlearndiffatk, pre=True, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3)
    assert calls == [] and res.adversarial_prompts == res.prompts and res.pre_asr == 1.0


def test_needs_white_box_gradients(tiny_model):
    m = tiny_model.copy()
    m.capabilities = m.capabilities - {Capability.TRAINABLE_DENOISER}
    with pytest.raises(gu.GenUnlearnError, match="trainable_denoiser"):
        gu.attack(m, "unlearndiffatk", "star", preset="smoke")


def test_bad_position_is_an_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="prefix"):
        gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", position="middle")


def test_paper_defaults():
    cfg = unlearndiffatk.UnlearnDiffAtkConfig()
    got = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    assert got["k"] == 3 and got["t_blocks"] == 50 and got["iterations"] == 40
    assert got["lr"] == 0.01 and got["weight_decay"] == 0.1
