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


def test_objective_is_the_erased_models_denoising_loss_on_original_images(
    erased_pair, forced_judge, optimizer_steps, spy
):
    """The one Adam step's gradient on the embedding is the erased model's eps-MSE on noised
    latents of the ORIGINAL model's image of a concept caption whose concept word is replaced
    by s*: not through the original model, not on the erased model's images, not with the
    concept's word kept, not a flipped sign or an x0 target."""
    original, erased = erased_pair
    forced_judge(ci, pre=False, post=False)
    carriers, noised = spy(adv, "carrier_token"), spy(adv, "noised")
    gu.attack(erased, "concept_inversion", "star", original=original, preset="smoke",
              n_prompts=1, n_images=1, batch_size=1, grad_accum=1, steps=1,
              seed=3)  # fmt: skip
    ((_, [(emb, grad)]),) = optimizer_steps
    cid, cword = carriers[0][2]
    (_, z0, t, noise), _, _ = noised[0]
    world = erased.world
    captions = [world.caption(lab) for lab in world.split(["star"])[0]]
    with torch.no_grad():  # the first training image: caption 0 by the original, seed 3
        z_orig = original.encode_images(original.sample(captions, n=1, seed=3)[:1])
        z_erased = erased.encode_images(erased.sample(captions, n=1, seed=3)[:1])
    assert not torch.allclose(z_orig, z_erased, atol=1e-3)
    assert torch.equal(z0, z_orig)

    def grad_through(model):
        table = adv.token_table(model)
        v = table[adv.text_ids(model, "object")[0]].clone().requires_grad_(True)
        ids = adv.pack_ids(model, adv.text_ids(model, ci.with_word(captions[0], "star", cword)))
        embeds = torch.where((ids == cid).unsqueeze(-1), v, table[ids])
        x_t = model.scheduler.add_noise(z_orig, noise, t)
        pred = model.predict_noise(x_t, t, adv.encode_embeds(model, ids, embeds))
        torch.nn.functional.mse_loss(pred, noise).backward()
        return v.grad

    want = grad_through(erased)
    assert emb.shape == want.shape and want.abs().sum() > 0
    assert torch.allclose(grad, want, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(grad_through(original), want, rtol=1e-2, atol=1e-8)
