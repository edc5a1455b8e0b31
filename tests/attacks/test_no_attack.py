"""no_attack: pre-ASR only; the prompts, the model and the images are left exactly as they are."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.core import attack_loop


def test_changes_nothing_and_reports_the_unmodified_verdicts(erased_pair, monkeypatch):
    original, erased = erased_pair
    verdicts = [True, False, False]
    monkeypatch.setattr(
        attack_loop, "judge", lambda model, images, targets: verdicts[: len(images)]
    )
    before = {n: p.detach().clone() for n, p in erased.named_parameters()}
    res = gu.attack(erased, "no_attack", "red", original=original, n_prompts=3, seed=5)
    assert res.adversarial_prompts == res.prompts and res.success == verdicts
    assert res.asr == res.pre_asr == 1 / 3
    for i, p in enumerate(res.prompts):  # the attacked model's image, prompt i at seed + i
        want = erased.sample([p], n=1, seed=5 + i)[0]
        assert torch.allclose(res.images[i], want)
        assert not torch.allclose(original.sample([p], n=1, seed=5 + i)[0], want, atol=1e-3)
    assert all(torch.equal(p, before[n]) for n, p in erased.named_parameters())
