"""ESD's signature: which weights move, and the negative-guidance target it regresses onto."""

from __future__ import annotations

from itertools import product

import torch

import genunlearn as gu
from genunlearn.core.losses import negative_guidance_target
from genunlearn.core.sampling import partial_trajectory


def _changed(model, method="esd", **kw):
    run = gu.erase(model, method, "star", preset="smoke", **kw)
    return set(run.result.changed)


def test_esd_x_changes_only_cross_attention(tiny_model):
    names = _changed(tiny_model, train_method="xattn")
    assert names and all(".attn2." in n for n in names)
    assert all(n.startswith("unet.") for n in names)


def test_esd_u_changes_no_cross_attention(tiny_model):
    names = _changed(tiny_model, train_method="noxattn")
    assert names and not any(".attn2." in n for n in names)


def test_esd_kv_changes_only_keys_and_values(tiny_model):
    names = _changed(tiny_model, train_method="kv")
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)


def test_negative_guidance_target_pushes_past_unconditional():
    e_c, e_u = torch.tensor([2.0]), torch.tensor([0.5])
    assert torch.equal(negative_guidance_target(e_c, e_u, 1.0), torch.tensor([-1.0]))
    assert torch.equal(negative_guidance_target(e_c, e_u, 0.0), e_u)


def test_partial_trajectory_runs_k_steps(tiny_model):
    cond = tiny_model.encode_prompt(["star"])
    unc = tiny_model.encode_prompt([""])
    noise = torch.randn(1, *tiny_model.latent_shape, generator=torch.Generator().manual_seed(0))
    x0, t0 = partial_trajectory(tiny_model, cond, unc, 5, 0, 3.0, noise)
    assert torch.equal(x0, noise * tiny_model.scheduler.init_noise_sigma)
    x2, t2 = partial_trajectory(tiny_model, cond, unc, 5, 2, 3.0, noise)
    assert t2 < t0 and not torch.equal(x2, x0)
    # the sampler's first two steps reach the same latents
    x2b, _ = partial_trajectory(tiny_model, cond, unc, 5, 2, 3.0, noise)
    assert torch.equal(x2, x2b)


def test_esd_caption_prompts_are_world_captions_with_the_target(tiny_model):
    run = gu.erase(tiny_model, "esd", "star", preset="smoke", prompt="captions", max_prompts=7)
    prompts = run.result.info["prompts"]
    world = tiny_model.world
    kinds = list(world.heads)
    every = {
        world.caption(dict(zip(kinds, c, strict=True))) for c in product(*world.heads.values())
    }
    assert len(prompts) == 7 and len(set(prompts)) == 7
    assert all(p in every and "star" in p.split() for p in prompts)
    # spread over the concept's captions (several colours), not the first rows only
    assert len({p.split()[1] for p in prompts}) > 1
