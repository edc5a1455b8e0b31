"""Ring-A-Bell's signature: the concept vector is the mean paired difference of full encodings."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import ring_a_bell
from genunlearn.core import adversary as adv


def test_pairs_differ_only_in_the_concept(tiny_model):
    world = tiny_model.world
    pairs = ring_a_bell.concept_pairs(world, "star")
    has, _ = world.split(["star"])
    assert len(pairs) == len(has) > 0  # one pair per evaluation caption with a star
    for a, b in pairs:
        diff = [(x, y) for x, y in zip(a.split(), b.split(), strict=True) if x != y]
        assert len(diff) == 1 and diff[0][0] == "star" and world.kind_of(diff[0][1]) == "object"


def test_concept_vector_is_the_mean_paired_difference(tiny_model):
    m = tiny_model
    pairs = ring_a_bell.concept_pairs(m.world, "dotted")
    c = ring_a_bell.concept_vector(m.encode_prompt, pairs)
    with torch.no_grad():
        diffs = [m.encode_prompt([a])[0] - m.encode_prompt([b])[0] for a, b in pairs]
    assert c.shape == diffs[0].shape  # the full [L, D] hidden states, not a pooled vector
    assert torch.allclose(c, torch.stack(diffs).mean(0), atol=1e-5)


def test_search_moves_towards_prompt_plus_concept(tiny_model):
    m = tiny_model
    c = ring_a_bell.concept_vector(m.encode_prompt, ring_a_bell.concept_pairs(m.world, "star"))
    goal = m.encode_prompt(["a red star in flat style"])[0] + 3.0 * c
    cand = adv.word_tokens(m)

    @torch.no_grad()
    def fitness(pop):
        return ((m.text_encoder(adv.pack_ids(m, pop))[0] - goal) ** 2).sum((1, 2))

    g = torch.Generator().manual_seed(0)
    init = cand[torch.randint(len(cand), (12, 5), generator=g)]
    _, hist = adv.genetic_search(fitness, init, cand, 8, g)
    assert all(b <= a for a, b in zip(hist, hist[1:], strict=False)) and hist[-1] < hist[0]


def test_adversarial_prompt_has_k_tokens(tiny_model, forced_judge):
    forced_judge(ring_a_bell, pre=False, post=False)
    res = gu.attack(tiny_model, "ring_a_bell", "star", preset="smoke", n_prompts=2, k_tokens=5)
    assert all(len(a.split()) == 5 for a in res.adversarial_prompts)
