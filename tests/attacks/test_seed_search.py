"""seed_search: the unmodified prompt at other seeds; the first image the judge accepts wins."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import seed_search
from genunlearn.core import attack_loop


def test_searches_the_attacked_models_other_seeds_and_keeps_the_first_hit(
    erased_pair, monkeypatch, spy
):
    """What the search maximises: the judge's verdict on the ATTACKED model's images of the
    UNCHANGED prompt at seeds other than the evaluation seeds; the first accepted image is the
    result. A judge that accepts only candidate 2 pins which image is returned."""
    original, erased = erased_pair
    monkeypatch.setattr(attack_loop, "judge", lambda model, images, targets: [False] * len(images))
    batches: list[torch.Tensor] = []

    def judge(model, images, targets):
        batches.append(images.clone())
        return [j in (2, 4) for j in range(len(images))]

    monkeypatch.setattr(seed_search, "judge", judge)
    erased_samples = spy(erased, "sample")
    res = gu.attack(erased, "seed_search", "red", original=original, n_prompts=2, n_seeds=5,
                    seed=3)  # fmt: skip
    assert res.adversarial_prompts == res.prompts and res.success == [True, True]
    assert len(batches) == 2 and all(len(b) == 5 for b in batches)
    searched = [(a, k) for a, k, _ in erased_samples if k.get("n") == 5]
    assert len(searched) == 2  # the candidates are the attacked model's generations ...
    eval_seeds = {3, 4}
    for i, ((prompts, kw), batch) in enumerate(zip(searched, batches, strict=True)):
        assert prompts[0] == [res.prompts[i]]  # ... of the unchanged prompt ...
        assert not eval_seeds & set(range(kw["seed"], kw["seed"] + 5))  # ... at other seeds
        assert torch.equal(res.images[i], batch[2])  # the first accepted candidate
    assert not torch.allclose(res.images[0], res.images[1])
