"""UnlearnDiffAtk's signature: k tokens prepended, timestep blocks, stop at the first success."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

import genunlearn as gu
from genunlearn.attacks import unlearndiffatk
from genunlearn.core import adversary as adv
from genunlearn.types import Capability


def test_paper_timestep_blocks():
    assert unlearndiffatk.block_timesteps(1000, 50) == list(range(10, 1000, 20))


def test_adversarial_prompt_is_k_tokens_then_the_prompt(tiny_model, forced_judge):
    calls = forced_judge(unlearndiffatk, pre=False, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3, k=2)
    assert res.pre_asr == res.asr == 0.0
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        assert a.endswith(p) and len(a.split()) == len(p.split()) + 2
    assert calls == [1, 1] * 3  # every timestep block (2) of every prompt was checked


def test_suffix_position(tiny_model, forced_judge):
    forced_judge(unlearndiffatk, pre=False, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=2,
                    position="suffix")  # fmt: skip
    assert all(a.startswith(p) for p, a in zip(res.prompts, res.adversarial_prompts, strict=True))


def test_stops_at_first_success_and_skips_pre_successes(tiny_model, forced_judge):
    calls = forced_judge(unlearndiffatk, pre=False, post=True)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3)
    assert calls == [1, 1, 1] and res.asr == 1.0 and res.pre_asr == 0.0
    calls = forced_judge(unlearndiffatk, pre=True, post=False)
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", n_prompts=3)
    assert calls == [] and res.adversarial_prompts == res.prompts and res.pre_asr == 1.0


def test_needs_white_box_gradients(tiny_model):
    m = tiny_model.copy()
    m.capabilities = m.capabilities - {Capability.TRAINABLE_DENOISER}
    with pytest.raises(gu.GenUnlearnError, match="trainable_denoiser"):
        gu.attack(m, "unlearndiffatk", "star", preset="smoke")


def test_bad_position_is_an_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="prefix"):
        gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", position="middle")


def test_paper_defaults():
    cfg = unlearndiffatk.UnlearnDiffAtkConfig()
    got = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    assert got["k"] == 3 and got["t_blocks"] == 50 and got["iterations"] == 40
    assert got["lr"] == 0.01 and got["weight_decay"] == 0.1


def _denoising_grad(model, onehot, prompt, z0, t, noise):
    """d/d(one-hot) of ||eps - eps_model(noised z0, t, E([delta; prompt]))||^2, hardtanh-clipped
    as the straight-through estimator passes it to the token probabilities."""
    x = onehot.detach().clone().requires_grad_(True)
    delta = x @ adv.token_table(model)[adv.word_tokens(model)]
    ids, embeds = adv.splice(model, [delta, adv.text_ids(model, prompt)])
    x_t = model.scheduler.add_noise(z0, noise, t)
    F.mse_loss(model.predict_noise(x_t, t, adv.encode_embeds(model, ids, embeds)), noise).backward()
    return x.grad.clamp(-1, 1)


def test_objective_is_the_erased_models_denoising_loss_on_the_originals_image(
    erased_pair, forced_judge, optimizer_steps, spy
):
    """The one Adam step's gradient is the erased model's eps-MSE on noised latents of the
    ORIGINAL model's image of the prompt (at the prompt's seed), through the erased UNet and
    text encoder: not the original's loss, not the erased model's own image, not a flipped sign,
    not a teacher-matching (P4D) or x0 target."""
    original, erased = erased_pair
    forced_judge(unlearndiffatk, pre=False, post=False)
    draws, noised = spy(adv, "sample_one_hot"), spy(adv, "noised")
    res = gu.attack(erased, "unlearndiffatk", "star", original=original, preset="smoke",
                    n_prompts=1, k=1, t_blocks=1, iterations=1, seed=3)  # fmt: skip
    ((_, [(probs, grad)]),) = optimizer_steps
    onehot = draws[0][2]
    (_, z0, t, noise), _, _ = noised[0]
    prompt = res.prompts[0]
    with torch.no_grad():
        z_orig = original.encode_images(original.sample([prompt], n=1, seed=3))
        z_erased = erased.encode_images(erased.sample([prompt], n=1, seed=3))
    assert not torch.allclose(z_orig, z_erased, atol=1e-3)  # the two models are told apart
    assert torch.equal(z0, z_orig)  # the target latent is the original model's image
    want = _denoising_grad(erased, onehot, prompt, z_orig, t, noise)
    assert probs.shape == want.shape and want.abs().sum() > 0
    assert torch.allclose(grad, want, rtol=1e-4, atol=1e-8)
    # the same loss through the original model would give another gradient: the check can fail
    assert not torch.allclose(_denoising_grad(original, onehot, prompt, z_orig, t, noise), want,
                              rtol=1e-2, atol=1e-6)  # fmt: skip
