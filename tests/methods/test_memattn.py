"""MemAttn signature tests: no weight changes, the padding mask, BOS scaling in the cond half only."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.attention import AttentionStore
from genunlearn.methods.memattn import (
    MemAttnConfig,
    attention_trajectory,
    detection_scores,
    memattn_attention,
    prompt_lengths,
    scores_from_trajectory,
)

PROMPTS = ["a red star in striped style", "a blue heart"]


def _cfg_batch(model, prompts):
    """One CFG denoiser input [uncond; cond] as the sampler builds it."""
    cond = model.encode_prompt(prompts)
    uncond = model.encode_prompt([""]).expand(len(prompts), -1, -1)
    x = torch.randn(
        (2 * len(prompts), *model.latent_shape), generator=torch.Generator().manual_seed(0)
    )
    return x, torch.cat([uncond, cond])


def _run_layer_inputs(model, prompts, **kw):
    """Run one CFG denoiser call under MemAttn; return stored probs and each layer's inputs."""
    store, inputs = AttentionStore(), []
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, kwargs: inputs.append(
                (mod, args[0], kwargs["encoder_hidden_states"])
            ),
            with_kwargs=True,
        )
        for m in model.cross_attention_layers().values()
    ]
    x, c = _cfg_batch(model, prompts)
    try:
        with torch.no_grad(), memattn_attention(model, prompts, store=store, **kw):
            model.predict_noise(x, torch.tensor(500), c)
    finally:
        for h in hooks:
            h.remove()
    return store.all_probs(), inputs


def test_memattn_leaves_every_weight_unchanged(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    run = gu.erase(tiny_model, "memattn", "star", preset="smoke", seed=0)
    assert run.result.changed == {}
    after = dict(run.model.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)
    assert run.model.inference["memattn"] == {"c1": 1.25, "mask": True, "mask_eos": False}
    assert "memattn" not in tiny_model.inference


def test_mitigated_sampler_differs_and_restores_processors(tiny_model):
    run = gu.erase(tiny_model, "memattn", "star", preset="smoke", seed=0)
    procs = {n: m.processor for n, m in run.model.cross_attention_layers().items()}
    a = tiny_model.sample(PROMPTS, n=1, seed=0)
    b = run.model.sample(PROMPTS, n=1, seed=0)
    assert not torch.equal(a, b)
    assert {n: m.processor for n, m in run.model.cross_attention_layers().items()} == procs
    # c1 = 1 and no mask is the plain model: the processor's maths equals diffusers'
    plain = gu.erase(tiny_model, "memattn", "star", preset="smoke", c1=1.0, mask=False)
    assert torch.allclose(plain.model.sample(PROMPTS, n=1, seed=0), a, atol=1e-4)


def test_attention_has_zero_mass_beyond_prompt_length(tiny_model):
    store, _ = _run_layer_inputs(tiny_model, PROMPTS)
    lengths = prompt_lengths(tiny_model.tokenizer, tiny_model.tokenize(PROMPTS))
    assert lengths.tolist() == [8, 5]  # BOS + words + EOS
    rows = torch.cat([lengths, lengths])  # the uncond half is masked with its partner's length
    assert len(store) == len(tiny_model.cross_attention_layers())
    for probs in store:  # [B, heads, pixels, tokens]
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
        for r, n_keep in enumerate(rows.tolist()):
            assert probs[r, ..., n_keep:].abs().max() == 0
            assert probs[r, ..., :n_keep].sum(-1).min() > 0.999
    unmasked, _ = _run_layer_inputs(tiny_model, PROMPTS, mask=False)
    assert unmasked[0][0, ..., 8:].sum() > 0  # without the mask padding does get attention
    eos_masked, _ = _run_layer_inputs(tiny_model, PROMPTS, mask_eos=True)
    assert eos_masked[0][0, ..., 7:].abs().max() == 0


def test_bos_logit_scaled_only_in_conditional_half(tiny_model):
    c1 = 2.0
    store, inputs = _run_layer_inputs(tiny_model, PROMPTS, c1=c1, mask=False)
    n = len(PROMPTS)
    for probs, (attn, hidden, context) in zip(store, inputs, strict=True):
        if hidden.ndim == 4:
            hidden = hidden.flatten(2).transpose(1, 2)
        q = attn.head_to_batch_dim(attn.to_q(hidden))
        k = attn.head_to_batch_dim(attn.to_k(context))
        logits = (q @ k.transpose(1, 2) * attn.scale).view(2 * n, attn.heads, q.shape[1], -1)
        plain = logits.softmax(-1)
        scaled = logits.clone()
        scaled[n:, ..., 0] *= c1
        assert torch.allclose(probs, scaled.softmax(-1), atol=1e-5)
        assert torch.allclose(probs[:n], plain[:n], atol=1e-6)  # unconditional half untouched
        assert not torch.allclose(probs[n:], plain[n:], atol=1e-4)


def test_detection_scores_are_attention_entropies(tiny_model):
    traj = attention_trajectory(tiny_model, PROMPTS, n=2, seed=0)
    steps = tiny_model.sampling["steps"]
    assert traj.shape == (steps, len(tiny_model.cross_attention_layers()), 4, 32)
    assert torch.allclose(traj.sum(-1), torch.ones(()), atol=1e-5)
    e = detection_scores(tiny_model, PROMPTS, n=2, seed=0, mode="E", layer=1)
    p = traj[0, 1]
    assert torch.allclose(e, -(p * p.log()).sum(-1), atol=1e-5)
    assert e.shape == (4,)  # prompt-major: one score per (prompt, seed)
    d = detection_scores(tiny_model, PROMPTS, n=2, seed=0, mode="D", layer=None)
    assert d.shape == (4,) and torch.isfinite(d).all()
    # detection looks at the unmitigated attention, even on a mitigated model
    run = gu.erase(tiny_model, "memattn", "star", preset="smoke")
    assert torch.allclose(
        detection_scores(run.model, PROMPTS, n=2, mode="E", layer=1), e, atol=1e-5
    )
    assert run.model.inference["memattn"]["c1"] == 1.25


def test_bad_settings_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="detect_mode must be one of"):
        detection_scores(tiny_model, PROMPTS, mode="X")
    with pytest.raises(gu.GenUnlearnError, match="detect_layer 9 does not exist"):
        detection_scores(tiny_model, PROMPTS, mode="E", layer=9)
    with pytest.raises(gu.GenUnlearnError, match="c1 must be positive"):
        gu.erase(tiny_model, "memattn", "star", preset="smoke", c1=0)


def _h(p):
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def test_detection_mode_d_is_late_entropy_plus_the_padding_entropy_change(tiny_model):
    traj = attention_trajectory(tiny_model, PROMPTS, n=1, seed=0, steps=10)
    cfg = MemAttnConfig(detect_mode="D", detect_layer=None, late_share=0.2)
    got = scores_from_trajectory(tiny_model, traj, PROMPTS, 1, cfg)
    avg = traj.mean(1)  # [steps, rows, tokens]: all layers
    late = avg[8:]  # the last fifth of 10 steps
    eos = [7, 4]  # "a red star in striped style" / "a blue heart": <bos> words <eos>
    for r, e in enumerate(eos):
        # entropy terms of the end-of-text and padding positions only
        pad_late, pad_first = _h(late[:, r, e:]).mean(), _h(avg[0, r, e:])
        want = _h(late[:, r]).mean() + pad_late - pad_first
        assert torch.allclose(got[r], want, atol=1e-5)


def test_detection_scores_spread_attention_above_attention_resting_on_bos(tiny_model):
    """The paper's signal: a memorized prompt's attention spreads over its (trigger) tokens, an
    ordinary prompt's rests on BOS; the score must rank the spread one higher in both modes."""
    steps, layers, tokens = 5, 2, 32
    bos = torch.zeros(steps, layers, 1, tokens)
    bos[..., 0] = 0.9
    bos[..., 1:8] = 0.1 / 7
    spread = torch.zeros(steps, layers, 1, tokens)
    spread[..., :8] = 1 / 8
    spread[1:, ..., 7:] = 1 / 25  # and the summary tokens' attention changes along the run
    spread[1:, ..., :7] = 0.0
    for cfg in (MemAttnConfig(detect_mode="E", detect_layer=1),
                MemAttnConfig(detect_mode="D", detect_layer=None)):  # fmt: skip
        s_bos = scores_from_trajectory(tiny_model, bos, PROMPTS[:1], 1, cfg)
        s_spread = scores_from_trajectory(tiny_model, spread, PROMPTS[:1], 1, cfg)
        assert s_spread > s_bos, cfg.detect_mode
