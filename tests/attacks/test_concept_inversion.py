"""Concept Inversion's signature: one learned token replaces the concept's word; weights stay."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import concept_inversion as ci
from genunlearn.core import adversary as adv


def test_with_word_replaces_whole_words_only():
    assert ci.with_word("a red star in starry style", "star", "X") == "a red X in starry style"


def test_inversion_learns_one_embedding_and_changes_no_weight(tiny_model, forced_judge):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    forced_judge(ci, pre=False, post=False)
    res = gu.attack(tiny_model, "concept_inversion", "star", preset="smoke", n_prompts=3,
                    original=tiny_model, steps=3, lr=0.05)  # fmt: skip
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    emb = res.artifact["embedding"]
    init = adv.token_table(tiny_model)[adv.text_ids(tiny_model, "object")[0]]
    assert emb.shape == init.shape and not torch.equal(emb, init)
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        assert a == p.replace("star", "<s*>")


def test_inversion_goes_through_the_attacked_model_and_its_defence(tiny_model):
    """Same seed, same images: only the attacked model's prediction differs (a negative prompt
    enters the loss through guidance), so the learned embeddings must differ."""
    cfg = ci.ConceptInversionConfig(n_images=2, steps=2, batch_size=2, grad_accum=1,
                                    scale_lr=False, lr=0.05, progress=False)  # fmt: skip
    carrier = adv.carrier_token(tiny_model, ["a red star in flat style", "star"])
    plain, _ = ci.invert(tiny_model, tiny_model, "star", cfg, carrier)
    again, _ = ci.invert(tiny_model, tiny_model, "star", cfg, carrier)
    defended = tiny_model.copy()
    defended.apply_inference({"negative_prompt": "star"})
    other, _ = ci.invert(defended, tiny_model, "star", cfg, carrier)
    assert torch.equal(plain, again) and not torch.allclose(plain, other)
