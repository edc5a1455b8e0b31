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


def test_textual_inversion_stage_and_the_attention_loss_on_its_tokens(tiny_model, first_loss):
    """Stage 0 is the plain denoising loss of the concept images under captions whose concept
    words are replaced by the trainable placeholders (initialised from those words, repeated);
    stage 1 then suppresses attention on the *learned* placeholders (and the end-of-text token).

    The stand-in training loop records stage 0's first loss and gradient, then "learns" by
    setting the placeholders to the embeddings of three known words, so both stages can be
    recomputed through the ordinary text encoder: fails if the TI loss is another loss, the
    placeholders are not spliced in, stage 1 ignores the learned embeddings, or the attention
    loss looks at the wrong token positions.
    """
    from genunlearn.core.adversary import text_ids, token_table

    b, n_tok, learned = 2, 3, ["dotted", "checkered", "wavy"]
    table = token_table(tiny_model)
    ids = [text_ids(tiny_model, w) for w in learned]
    assert all(len(i) == 1 for i in ids)
    ti = []

    def ti_stage(params, loss):  # stage 0: its parameters are the placeholder embeddings
        (v,) = params
        ti.extend((loss.detach(), v.detach().clone(), torch.autograd.grad(loss, v)[0]))
        with torch.no_grad():
            v.copy_(table[[i[0] for i in ids]])
        return [loss.item()]

    # stage 1 trains the whole UNet, part of which its attention loss never reaches: no grads
    _, _, attn_loss, _, seed, _ = first_loss(
        "forget_me_not", tiny_model, gu.ErasureTask("striped"), earlier=[ti_stage], grads=False,
        use_ti=True, ti_tokens=n_tok,
    )  # fmt: skip

    prompts, words = concept_prompts(tiny_model, "striped", b)
    assert words == "striped style" and all(p.endswith(" striped style") for p in prompts)
    w_ids = text_ids(tiny_model, words)
    init = [w_ids[k % len(w_ids)] for k in range(n_tok)]  # the concept words, repeated
    ti_loss, v0, v_grad = ti
    assert torch.equal(v0, table[init])

    def with_words(tokens):
        return [p[: -len(words)] + " ".join(tokens) for p in prompts]

    with torch.no_grad():
        uniq = list(dict.fromkeys(prompts))
        z0 = tiny_model.encode_images(cached_sample(tiny_model, uniq, n=1, seed=0))
        z0 = z0[[uniq.index(p) for p in prompts]]
    sched = tiny_model.scheduler
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(z0), (b,), generator=g)
    noise = torch.randn(z0[idx].shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    x_t = sched.add_noise(z0[idx], noise, t)
    # stage 0 through the ordinary text encoder: the init words spelled out in the captions;
    # the placeholders' gradient is that of the token-table rows they were copied from
    m = tiny_model.copy()
    emb_table = m.text_encoder.get_input_embeddings().weight
    emb_table.requires_grad_(True)
    tokens = [tiny_model.tokenizer.decode(i) for i in init]
    cond = m.encode_prompt(with_words(tokens))[idx]
    want = (m.predict_noise(x_t, t, cond) - noise).pow(2).mean()
    assert ti_loss.item() == pytest.approx(want.item(), rel=1e-4)
    row_grad = torch.autograd.grad(want, emb_table)[0]
    for tok in set(init):  # repeated words share one table row: their gradients add up
        got = sum(v_grad[k] for k in range(n_tok) if init[k] == tok)
        assert torch.allclose(got, row_grad[tok], rtol=1e-3, atol=1e-4 * float(got.abs().max()))
    # stage 1: attention mass on the learned placeholders and the end-of-text token
    texts = with_words(learned)
    with torch.no_grad():
        probs = attention_probs(tiny_model, x_t, t, tiny_model.encode_prompt(texts)[idx])
    pos = position_mask(tiny_model, texts, [" ".join(learned)] * b, include_eot=True)[idx]
    assert int(pos[0].sum()) == n_tok + 1
    mass = sum((p * pos[:, None, None, :]).pow(2).sum().sqrt() for p in probs.values())
    assert attn_loss.item() == pytest.approx(float(mass), rel=1e-4)
