"""negative_prompt's signature: the concept's text replaces the *unconditional* branch of
classifier-free guidance (the conditional branch keeps the user's prompt), so every generation is
pushed away from the concept; no weight changes."""

from __future__ import annotations

import torch

import genunlearn as gu


def _branches(model, prompt):
    """The (unconditional, conditional) text states the sampler feeds the denoiser."""
    seen = []
    inner = model.predict_noise

    def spy(x, t, cond):
        seen.append(cond.detach().clone())
        return inner(x, t, cond)

    model.predict_noise = spy
    try:
        model.sample([prompt], n=1, seed=0, steps=1)
    finally:
        del model.predict_noise
    return seen[0].chunk(2)


def test_concept_text_is_the_unconditional_branch(tiny_model):
    world = tiny_model.world
    task = gu.ErasureTask(("star", "striped"), anchor="heart", retain=("circle",))
    run = gu.erase(tiny_model, "negative_prompt", task)
    neg = f"{world.text('star')}, {world.text('striped')}"  # the targets, never anchor / retain
    assert run.model.inference == {"negative_prompt": neg} and run.result.changed == {}
    prompt = "a red star in striped style"
    uncond, cond = _branches(run.model, prompt)
    with torch.no_grad():
        assert torch.equal(uncond, tiny_model.encode_prompt([neg]))
        assert torch.equal(cond, tiny_model.encode_prompt([prompt]))
        base_uncond, _ = _branches(tiny_model, prompt)
        assert torch.equal(base_uncond, tiny_model.encode_prompt([""]))  # the base model: ""


def test_explicit_text_overrides_the_targets(tiny_model):
    run = gu.erase(tiny_model, "negative_prompt", "star", text="a shape with five points")
    uncond, _ = _branches(run.model, "a red star")
    with torch.no_grad():
        assert torch.equal(uncond, tiny_model.encode_prompt(["a shape with five points"]))
