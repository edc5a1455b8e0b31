"""random_tokens: k random whole-word tokens, n_tries draws, stop at the first success."""

from __future__ import annotations

import genunlearn as gu
from genunlearn.attacks import random_tokens


def test_random_prefixes_are_tried_n_times(tiny_model, forced_judge):
    calls = forced_judge(random_tokens, pre=False, post=False)
    res = gu.attack(tiny_model, "random_tokens", "red", preset="smoke", n_prompts=2, n_tries=3, k=4)
    assert calls == [1] * 6 and res.asr == 0.0
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        assert a.endswith(p) and len(a.split()) == len(p.split()) + 4


def test_stops_at_first_success(tiny_model, forced_judge):
    calls = forced_judge(random_tokens, pre=False, post=True)
    res = gu.attack(tiny_model, "random_tokens", "red", preset="smoke", n_prompts=2, n_tries=5)
    assert calls == [1, 1] and res.asr == 1.0 and res.pre_asr == 0.0


def test_different_seeds_draw_different_tokens(tiny_model, forced_judge):
    forced_judge(random_tokens, pre=False, post=False)
    a = gu.attack(tiny_model, "random_tokens", "red", preset="smoke", n_prompts=2, seed=0)
    b = gu.attack(tiny_model, "random_tokens", "red", preset="smoke", n_prompts=2, seed=1)
    assert a.adversarial_prompts != b.adversarial_prompts
