"""PUND's signature: a suffix embedding searched on the original only, with min-max updates of a
surrogate's cross-attention; the attacked model is used only to generate the final prompts."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import pund
from genunlearn.core import adversary as adv
from genunlearn.core import attack_loop as loop


def test_without_word():
    assert pund.without_word("a red star in flat style", "star") == "a red in flat style"


def test_search_updates_only_a_surrogate_cross_attention(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    cfg = pund.PUNDConfig(n_images=2, epochs=3, bins=2, steps_per_bin=1, update_every=1,
                          surrogate_lr=1e-3, progress=False)  # fmt: skip
    carrier = adv.carrier_token(tiny_model, ["a red star in flat style"])
    emb, changed = pund.search(tiny_model, "star", cfg, carrier)
    assert changed and all(".attn2." in n for n in changed)  # the min-max step happened
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    init = adv.token_table(tiny_model)[adv.text_ids(tiny_model, "star")[0]]
    assert emb.shape == init.shape and not torch.equal(emb, init)
    _, none = pund.search(tiny_model, "star", pund.PUNDConfig(**{**cfg.__dict__, "update_every": 0}),
                          carrier)  # fmt: skip
    assert none == []


def test_transfer_never_queries_the_victim_while_searching(tiny_model, forced_judge):
    victim = tiny_model.copy()
    forced_judge(pund, pre=False, post=False)
    with loop.count_calls(victim.denoiser) as calls:
        res = gu.attack(victim, "pund", "star", preset="smoke", n_prompts=3, original=tiny_model)
    # only the judged generations: one unmodified and one attacked image per prompt
    assert calls[0] == 2 * 3 * victim.sampling["steps"]
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        assert a == pund.without_word(p, "star") + " <s*>"
