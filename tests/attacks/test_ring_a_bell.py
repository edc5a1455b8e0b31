"""Ring-A-Bell's signature: the concept vector is the mean paired difference of full encodings."""

from __future__ import annotations

import pytest
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


def test_world_vocabulary_is_the_worlds_words(tiny_model, forced_judge):
    m = tiny_model
    world_ids = adv.world_tokens(m)
    words = {m.tokenizer.decode([int(i)]).strip() for i in world_ids}
    concept_words = {c.name for c in m.world.concepts()}
    assert concept_words <= words  # every concept the world names can be searched for
    caption_words = {w for lab in m.world.grid() for w in m.world.caption(lab).split()}
    caption_words |= {w for c in m.world.concepts() for w in m.world.prompt(c.name).split()}
    assert words <= caption_words  # and nothing the world never says
    assert len(world_ids) < len(adv.word_tokens(m))
    forced_judge(ring_a_bell, pre=False, post=False)
    res = gu.attack(m, "ring_a_bell", "star", preset="smoke", n_prompts=2, vocabulary="world")
    assert all(set(a.split()) <= words for a in res.adversarial_prompts)


def test_unknown_vocabulary_names_the_valid_ones(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="words, world"):
        gu.attack(tiny_model, "ring_a_bell", "star", preset="smoke", vocabulary="all")


def test_search_minimises_the_distance_to_prompt_plus_eta_times_the_concept_vector(
    erased_pair, forced_judge, spy
):
    """The genetic search's fitness is ||E_orig(candidate) - (E_orig(p) + eta c)||^2 with c the
    mean of E_orig(with concept) - E_orig(without), all through the ORIGINAL text encoder: not
    the erased encoder, not c reversed or unscaled, not the prompt alone, not maximised; and the
    adversarial prompt is the decoded fittest individual."""
    original, erased = erased_pair
    forced_judge(ring_a_bell, pre=False, post=False)
    searches = spy(adv, "genetic_search")
    res = gu.attack(erased, "ring_a_bell", "star", original=original, preset="smoke",
                    n_prompts=1, k_tokens=4, eta=2.5)  # fmt: skip
    (((fitness, population, *_), _, (best, history)),) = searches
    with torch.no_grad():
        pairs = ring_a_bell.concept_pairs(original.world, "star")
        enc = original.encode_prompt
        c = torch.stack([enc([a])[0] - enc([b])[0] for a, b in pairs]).mean(0)
        goal = enc([res.prompts[0]])[0] + 2.5 * c

        def distance(model, pop):
            return ((model.text_encoder(adv.pack_ids(model, pop))[0] - goal) ** 2).sum((1, 2))

        want = distance(original, population)
        got = fitness(population)
        assert torch.allclose(got, want, rtol=1e-4)
        assert not torch.allclose(distance(erased, population), want, rtol=1e-2)  # can fail
        # the prompt is the fittest individual found: the last generation's best, at least as
        # close to the goal as every initial one
        reached = distance(original, best[None])[0]
        assert torch.isclose(reached, torch.tensor(history[-1]), rtol=1e-4)
        assert float(reached) <= float(want.min()) * (1 + 1e-5)
    assert res.adversarial_prompts[0] == adv.decode(original, best)
