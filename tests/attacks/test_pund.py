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


def test_objectives_of_the_embedding_and_of_the_surrogates_erasing_step(
    erased_pair, forced_judge, optimizer_steps, spy
):
    """Embedding step: the gradient of the ORIGINAL (surrogate) model's eps-MSE, normalised by
    its own value, on the original's image of a concept caption with the concept's word deleted
    and s* appended. Surrogate step: the gradient, on cross-attention only, of
    ||eps_sur(z_t | p ; s*) - eps_sur(z_t | p without the concept)||^2 (normalised), i.e. the
    surrogate erases s*. Wrong objectives: the victim as surrogate, the concept word kept, a
    flipped sign, no normalisation, the erasing step pulled the other way or towards the noise."""
    original, erased = erased_pair
    forced_judge(pund, pre=False, post=False)
    carriers, noised = spy(adv, "carrier_token"), spy(adv, "noised")
    res = gu.attack(erased, "pund", "star", original=original, preset="smoke", n_prompts=1,
                    n_images=1, epochs=2, bins=2, update_every=1, surrogate_lr=1e-3, seed=3)  # fmt: skip
    assert len(optimizer_steps) == 2 * 2 + 2  # 2 epochs x 2 bins, then 2 erasing steps
    cid, cword = carriers[0][2]
    world = original.world
    captions = [world.caption(lab) for lab in world.split(["star"])[0]]
    stripped = pund.without_word(captions[0], "star")
    with torch.no_grad():  # the one training image: caption 0 by the original, seed 3
        z_orig = original.encode_images(original.sample(captions, n=1, seed=3)[:1])
    table = adv.token_table(original)
    ids = adv.pack_ids(original, adv.text_ids(original, f"{stripped} {cword}"))

    def cond_of(model, v):
        embeds = torch.where((ids == cid).unsqueeze(-1), v, table[ids])
        return adv.encode_embeds(model, ids, embeds)

    def normalised(loss):
        return loss / loss.detach()

    # the first embedding step
    (_, z0, t, noise), _, _ = noised[0]
    assert torch.equal(z0, z_orig)

    def emb_grad(model):
        v = table[adv.text_ids(original, "star")[0]].clone().requires_grad_(True)
        x_t = model.scheduler.add_noise(z_orig, noise, t)
        pred = model.predict_noise(x_t, t, cond_of(model, v))
        normalised(torch.nn.functional.mse_loss(pred, noise)).backward()
        return v.grad

    _, [(emb, grad)] = optimizer_steps[0]
    want = emb_grad(original)
    assert emb.shape == want.shape and want.abs().sum() > 0
    assert torch.allclose(grad, want, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(emb_grad(erased), want, rtol=1e-2, atol=1e-8)  # can fail
    # the first erasing step of the surrogate (still the original's weights at that point)
    (_, _, t, _), _, x_t = noised[4]
    sur = original.copy()
    attn = {n: p for n, p in sur.denoiser.named_parameters() if ".attn2." in n}
    for p in attn.values():
        p.requires_grad_(True)
    with torch.no_grad():
        cond = cond_of(sur, res.artifact["embedding"])
        goal = sur.predict_noise(x_t, t, sur.encode_prompt([stripped]))
    normalised(torch.nn.functional.mse_loss(sur.predict_noise(x_t, t, cond), goal)).backward()
    _, recorded = optimizer_steps[4]
    assert len(recorded) == len(attn)
    for (p, got), (name, q) in zip(recorded, attn.items(), strict=True):
        assert p.shape == q.shape and torch.allclose(got, q.grad, rtol=1e-4, atol=1e-9), name
