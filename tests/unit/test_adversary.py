"""core.adversary: projections, soft-prompt encoding, genetic search (invariants that fail if the
mechanism is wrong)."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core import adversary as adv


def _sort_projection(v: torch.Tensor) -> torch.Tensor:
    """Independent reference: the sort-based Euclidean projection onto the simplex (Duchi 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp(min=0)


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_simplex_projection_returns_rows_on_the_simplex(scale):
    a = torch.randn(6, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    p = adv.project_simplex(a)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(6, dtype=p.dtype), atol=1e-9)
    for row, out in zip(a, p, strict=True):  # the closest point of the simplex, not any point
        assert torch.allclose(out, _sort_projection(row), atol=1e-8)
    assert torch.allclose(adv.project_simplex(p), p, atol=1e-9)  # points on it stay put


def test_sample_one_hot_is_straight_through_with_clipped_gradient():
    probs = adv.project_simplex(torch.rand(3, 7, generator=torch.Generator().manual_seed(1)))
    probs.requires_grad_(True)
    onehot = adv.sample_one_hot(probs, torch.Generator().manual_seed(0))
    assert torch.equal(onehot.sum(-1), torch.ones(3)) and set(onehot.unique().tolist()) <= {0, 1}
    w = torch.linspace(-3, 3, 7).repeat(3, 1)
    (onehot * w).sum().backward()
    assert torch.equal(probs.grad, w.clamp(-1, 1))  # identity gradient, hardtanh-clipped
    # the sample follows the distribution: a one-hot row is always drawn
    sure = torch.zeros(2, 5)
    sure[0, 3] = sure[1, 1] = 1
    assert adv.sample_one_hot(sure, torch.Generator().manual_seed(5)).argmax(-1).tolist() == [3, 1]


def test_nearest_token_projection_returns_vocabulary_embeddings():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(30, 8, generator=g)
    emb = torch.randn(2, 4, 8, generator=g)
    ids, proj = adv.nearest_tokens(emb, table)
    assert ids.shape == (2, 4) and torch.equal(proj, table[ids])
    # a rescaled, slightly moved vocabulary row projects back to that row (cosine similarity)
    ids2, _ = adv.nearest_tokens(3.0 * table[[5, 17]] + 1e-3, table)
    assert ids2.tolist() == [5, 17]
    cand = torch.tensor([2, 9, 11])
    ids3, proj3 = adv.nearest_tokens(emb, table, cand)
    assert set(ids3.flatten().tolist()) <= {2, 9, 11} and torch.equal(proj3, table[ids3])


def test_genetic_search_improves_its_best_individual_monotonically():
    goal = torch.tensor([4, 8, 15, 16, 23, 42])
    cand = torch.arange(50)

    def fitness(pop):  # distance to a hidden sequence: lower is better
        return (pop - goal).abs().sum(-1).float()

    g = torch.Generator().manual_seed(0)
    init = torch.randint(50, (20, 6), generator=g)
    best, hist = adv.genetic_search(fitness, init, cand, 60, g, crossover=0.5, mutation=0.25)
    assert len(hist) == 61
    assert all(b <= a for a, b in zip(hist, hist[1:], strict=False))
    assert hist[-1] < hist[0]
    assert float(fitness(best[None])[0]) == hist[-1]


def test_genetic_search_is_seeded():
    cand = torch.arange(10)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        init = torch.randint(10, (8, 4), generator=g)
        return adv.genetic_search(lambda p: p.sum(-1).float(), init, cand, 5, g)[0]

    assert torch.equal(run(3), run(3))


def test_soft_embeddings_enter_the_text_encoder_exactly(tiny_model):
    m = tiny_model
    prompt = "a red star in flat style"
    ids = m.tokenize([prompt])
    table = adv.token_table(m)
    embeds = table[ids].clone().requires_grad_(True)
    out = adv.encode_embeds(m, ids, embeds)
    assert torch.allclose(out, m.encode_prompt([prompt]), atol=1e-6)
    out.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    # a carrier token replaced by "star"'s embedding encodes like the word itself
    cid, word = adv.carrier_token(m, [prompt])
    star = table[adv.text_ids(m, "star")[0]]
    with adv.soft_tokens(m, {cid: star}):
        carried = m.encode_prompt([f"a red {word} in flat style"])
    assert torch.allclose(carried, m.encode_prompt([prompt]), atol=1e-6)
    # and the hook is gone afterwards
    assert not torch.allclose(m.encode_prompt([f"a red {word} in flat style"]), carried)


def test_word_tokens_round_trip_and_pack_ids_checks_length(tiny_model):
    m = tiny_model
    words = adv.word_tokens(m)
    assert len(words) > 50
    for i in words[::25].tolist():
        assert adv.text_ids(m, adv.decode(m, [i])) == [i]
    ids = adv.pack_ids(m, [words[0], words[1]])
    assert ids.shape == (1, m.tokenizer.model_max_length)
    assert ids[0, :4].tolist() == [
        m.tokenizer.bos_token_id,
        words[0],
        words[1],
        m.tokenizer.eos_token_id,
    ]
    with pytest.raises(gu.GenUnlearnError, match="tokens"):
        adv.pack_ids(m, [words[0]] * m.tokenizer.model_max_length)


def test_effective_noise_sees_a_negative_prompt(tiny_model):
    m = tiny_model.copy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *m.latent_shape, generator=g)
    t = torch.tensor([500])
    cond = m.encode_prompt(["a red star in flat style"])
    with torch.no_grad():
        assert torch.equal(adv.effective_noise(m, x, t, cond), m.predict_noise(x, t, cond))
        m.apply_inference({"negative_prompt": "star"})
        e_neg = m.predict_noise(x, t, m.encode_prompt(["star"]))
        want = e_neg + m.sampling["guidance"] * (m.predict_noise(x, t, cond) - e_neg)
        assert torch.allclose(adv.effective_noise(m, x, t, cond), want, atol=1e-6)
