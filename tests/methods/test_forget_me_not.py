"""Forget-Me-Not's signature: its loss is the attention mass on the concept tokens, and it falls."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.attention import attention_probs, concept_attention_loss, position_mask
from genunlearn.core.cache import cached_sample
from genunlearn.methods.forget_me_not import concept_prompts


def _fixed_mass(model, prompts, words):
    """Attention mass on the concept tokens for fixed noisy latents (independent of the method)."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(len(prompts), *model.latent_shape, generator=g)
    t = torch.tensor([300] * len(prompts))
    with torch.no_grad():
        probs = attention_probs(model, x, t, model.encode_prompt(prompts))
    return float(concept_attention_loss(list(probs.values()), position_mask(model, prompts, words)))


def test_fmn_first_loss_is_the_attention_mass_of_its_batch(tiny_model):
    run = gu.erase(tiny_model, "forget_me_not", "star", preset="smoke", seed=0)
    # rebuild step 0's batch exactly as the method draws it and measure the mass independently
    prompts, words = concept_prompts(tiny_model, "star", 2)
    pos = position_mask(tiny_model, prompts, [words] * 2, include_eot=True)
    with torch.no_grad():
        uniq = list(dict.fromkeys(prompts))
        z0 = tiny_model.encode_images(cached_sample(tiny_model, uniq, n=1, seed=0))
        z0 = z0[[uniq.index(p) for p in prompts]]
        cond = tiny_model.encode_prompt(prompts)
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(len(z0), (2,), generator=g)
        noise = torch.randn(z0[idx].shape, generator=g)
        sched = tiny_model.scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (2,), generator=g)
        probs = attention_probs(tiny_model, sched.add_noise(z0[idx], noise, t), t, cond[idx])
    want = float(concept_attention_loss(list(probs.values()), pos[idx]))
    assert run.result.info["losses"][0] == pytest.approx(want, rel=1e-4)


def test_fmn_attention_mass_on_concept_tokens_falls(tiny_model):
    prompts = ["a red star in flat style", "a blue star in dotted style"]
    before = _fixed_mass(tiny_model, prompts, ["star", "star"])
    run = gu.erase(tiny_model, "forget_me_not", "star", preset="smoke", steps=15, lr=3e-3)
    after = _fixed_mass(run.model, prompts, ["star", "star"])
    losses = run.result.info["losses"]
    assert after < 0.7 * before
    assert sum(losses[-3:]) < sum(losses[:3])


def test_fmn_xattn_group_changes_only_cross_attention(tiny_model):
    run = gu.erase(tiny_model, "forget_me_not", "striped", preset="smoke", parameter_group="xattn")
    assert run.result.changed and all(".attn2." in n for n in run.result.changed)


def test_fmn_textual_inversion_targets_its_placeholder_tokens(tiny_model):
    run = gu.erase(
        tiny_model, "forget_me_not", "striped", preset="smoke", use_ti=True, ti_steps=3, ti_tokens=2
    )
    assert len(run.result.info["ti_first_last"]) == 2
    assert run.result.changed
    with pytest.raises(gu.GenUnlearnError, match="ti_tokens must be >= 1"):
        gu.erase(tiny_model, "forget_me_not", "star", preset="smoke", use_ti=True, ti_tokens=0)
