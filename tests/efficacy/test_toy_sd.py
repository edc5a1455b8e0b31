"""Efficacy on the trained toy-sd (slow): the testbed follows prompts; erasure really erases."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu

pytestmark = pytest.mark.slow


def test_toy_sd_follows_prompts(toy):
    res = gu.evaluate(toy, protocol="fidelity", n_per_prompt=1, seed=101)
    assert res["object_acc"] >= 0.9 and res["style_acc"] >= 0.85 and res["colour_acc"] >= 0.9


def test_cross_attention_is_named_like_sd(toy):
    names = [n for n, _ in toy.denoiser.named_modules()]
    assert any(n.endswith("attn2.to_k") for n in names)
    assert any(n.endswith("attn2.to_v") for n in names)
    assert toy.cross_attention_layers()


@pytest.mark.parametrize("concept", ["dotted", "heart"])
def test_original_keeps_and_uce_erases(toy, concept):
    base = gu.evaluate(toy, concept, n_per_prompt=1, fid=False, seed=202)
    assert base["ua"] <= 0.15  # the unmodified model shows the concept
    run = gu.erase(toy, "uce", concept, samples=False)
    erased = gu.evaluate(run.model, concept, n_per_prompt=1, fid=False, seed=202)
    # UCE's paper defaults are not equally strong on every concept (measured UA: striped 95%,
    # star 94%, heart 38%); the property held here is a large rise with retention kept
    assert erased["ua"] >= base["ua"] + 0.3
    assert erased["ira"] >= 0.7 and erased["cra"] >= 0.7


def test_negative_prompt_acts_on_sampling_only(toy):
    """The negative prompt changes generations but no weight (it does not erase a concept that
    the prompt names explicitly on toy-sd: see docs/results.md#negative_prompt)."""
    run = gu.erase(toy, "negative_prompt", "heart", samples=False)
    assert run.result.changed == {}
    p = ["a red heart in flat style"]
    assert not torch.equal(run.model.sample(p, n=2, seed=3), toy.sample(p, n=2, seed=3))
