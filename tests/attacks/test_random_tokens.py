"""random_tokens: k random whole-word tokens, n_tries draws, stop at the first success."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import random_tokens
from genunlearn.core import attack_loop


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


def test_success_is_the_judge_on_the_attacked_models_image_at_the_prompts_seed(
    erased_pair, monkeypatch
):
    """What the search maximises: the judge's verdict on the ATTACKED model's image of the
    k-tokens-plus-prompt text at the prompt's own evaluation seed; the first accepted try is
    kept. A judge that accepts only the second try pins the returned prompt, image and count."""
    original, erased = erased_pair
    monkeypatch.setattr(attack_loop, "judge", lambda model, images, targets: [False] * len(images))
    judged: list[torch.Tensor] = []

    def judge(model, images, targets):
        judged.append(images.clone())
        return [len(judged) == 2] * len(images)

    monkeypatch.setattr(random_tokens, "judge", judge)
    res = gu.attack(erased, "random_tokens", "red", preset="smoke", n_prompts=1, n_tries=4,
                    k=2, seed=3)  # fmt: skip
    assert len(judged) == 2 and res.success == [True] and res.asr == 1.0
    text = res.adversarial_prompts[0]
    assert text.endswith(res.prompts[0]) and text != res.prompts[0]
    want = erased.sample([text], n=1, seed=3)
    assert torch.allclose(judged[1], want) and torch.allclose(res.images[0], want[0])
    assert not torch.allclose(original.sample([text], n=1, seed=3), want, atol=1e-3)
