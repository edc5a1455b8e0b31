"""core.attention: patched processors reproduce the model, record true probabilities, restore exactly."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.attention import (
    AttentionStore,
    attention_probs,
    concept_attention_loss,
    patched_cross_attention,
    position_mask,
    token_positions,
)


def _inputs(model, prompts=("a red star in striped style", "a blue heart in flat style")):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(prompts), *model.latent_shape, generator=g)
    t = torch.tensor([500] * len(prompts))
    with torch.no_grad():
        cond = model.encode_prompt(list(prompts))
    return x, t, cond


def test_restore_is_exact_and_patched_output_matches(tiny_model):
    x, t, cond = _inputs(tiny_model)
    procs = {n: m.processor for n, m in tiny_model.cross_attention_layers().items()}
    with torch.no_grad():
        before = tiny_model.predict_noise(x, t, cond)
        with patched_cross_attention(tiny_model, AttentionStore()):
            patched = tiny_model.predict_noise(x, t, cond)
            assert all(
                m.processor is not procs[n] for n, m in tiny_model.cross_attention_layers().items()
            )
        after = tiny_model.predict_noise(x, t, cond)
    assert all(m.processor is procs[n] for n, m in tiny_model.cross_attention_layers().items())
    assert torch.equal(before, after)
    torch.testing.assert_close(patched, before, rtol=1e-4, atol=1e-5)


def test_restore_happens_even_when_the_block_fails(tiny_model):
    procs = {n: m.processor for n, m in tiny_model.cross_attention_layers().items()}
    with pytest.raises(RuntimeError), patched_cross_attention(tiny_model):
        raise RuntimeError("boom")
    assert all(m.processor is procs[n] for n, m in tiny_model.cross_attention_layers().items())


def test_probabilities_sum_to_one_over_tokens_and_match_q_k(tiny_model):
    x, t, cond = _inputs(tiny_model)
    with torch.no_grad():
        probs = attention_probs(tiny_model, x, t, cond)
    assert set(probs) == set(tiny_model.cross_attention_layers())
    for name, p in probs.items():
        layer = tiny_model.cross_attention_layers()[name]
        assert p.shape[0] == 2 and p.shape[1] == layer.heads and p.shape[3] == cond.shape[1]
        torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))
    # the recorded keys are those of to_k applied to the text states
    store = AttentionStore(keep_probs=False, keep_kv=True)
    with torch.no_grad(), patched_cross_attention(tiny_model, store):
        tiny_model.predict_noise(x, t, cond)
    for name, layer in tiny_model.cross_attention_layers().items():
        torch.testing.assert_close(store.keys[name][0], layer.to_k(cond))
        torch.testing.assert_close(store.values[name][0], layer.to_v(cond))


def test_kv_delta_equals_editing_the_weights(tiny_model):
    x, t, cond = _inputs(tiny_model)
    name, layer = next(iter(tiny_model.cross_attention_layers().items()))
    dw = 0.05 * torch.randn(layer.to_k.weight.shape, generator=torch.Generator().manual_seed(1))
    with (
        torch.no_grad(),
        patched_cross_attention(tiny_model, kv_delta={name: lambda c: (c @ dw.T, None)}),
    ):
        shifted = tiny_model.predict_noise(x, t, cond)
    edited = tiny_model.copy()
    with torch.no_grad():
        edited.cross_attention_layers()[name].to_k.weight.add_(dw)
        want = edited.predict_noise(x, t, cond)
        base = tiny_model.predict_noise(x, t, cond)
    torch.testing.assert_close(shifted, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(shifted, base)


def test_token_positions_and_concept_loss(tiny_model):
    assert token_positions(tiny_model, "a red star in striped style", "striped style") == [5, 6]
    assert token_positions(tiny_model, "a red star in striped style", "star", True) == [3, 7]
    with pytest.raises(gu.GenUnlearnError, match="does not occur"):
        token_positions(tiny_model, "a red star in striped style", "heart")
    x, t, cond = _inputs(tiny_model)
    prompts = ["a red star in striped style", "a blue heart in flat style"]
    pos = position_mask(tiny_model, prompts, ["star", "heart"])
    probs = list(attention_probs(tiny_model, x, t, cond).values())
    loss = concept_attention_loss(probs, pos)
    manual = sum(
        torch.cat([p[0, :, :, 3].flatten(), p[1, :, :, 3].flatten()]).norm() for p in probs
    )
    torch.testing.assert_close(loss, manual)
    # a region covering nothing leaves nothing; covering everything changes nothing
    empty = torch.zeros(2, 32, 32)
    assert float(concept_attention_loss(probs, pos, empty)) == 0.0
    torch.testing.assert_close(concept_attention_loss(probs, pos, torch.ones(2, 32, 32)), loss)
