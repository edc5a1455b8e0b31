"""DoCo's signature: the concept-preserving gradient never conflicts with the preservation
gradient (and is the raw gradient when there is no conflict), the discriminator really trains,
and only cross-attention K/V move by default."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.doco import PatchDiscriminator, discriminator_step, preserving_gradient


def _pair(seed: int, conflict: bool):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    if (torch.dot(a, b) < 0) != conflict:
        b = -b
    return a, b


@pytest.mark.parametrize("seed", range(5))
def test_conflicting_gradient_is_projected_off(seed):
    g, g_p = _pair(seed, conflict=True)
    out = preserving_gradient(g, g_p, 1.0)
    assert torch.dot(out, g_p) >= -1e-5 * g.norm() * g_p.norm()
    # only the component along g_p changed
    perp = g - torch.dot(g, g_p) / torch.dot(g_p, g_p) * g_p
    assert torch.allclose(out, perp, atol=1e-5)
    # lambda scales how much of the conflict is removed
    half = preserving_gradient(g, g_p, 0.5)
    assert torch.isclose(torch.dot(half, g_p), 0.5 * torch.dot(g, g_p), rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_non_conflicting_gradient_is_unchanged(seed):
    g, g_p = _pair(seed, conflict=False)
    assert torch.equal(preserving_gradient(g, g_p, 1.0), g)


def test_discriminator_gives_a_patch_map_for_small_and_large_latents():
    assert PatchDiscriminator(4, 8)(torch.randn(2, 4, 8, 8)).shape == (2, 1, 1, 1)
    assert PatchDiscriminator(4, 64)(torch.randn(2, 4, 64, 64)).shape == (2, 1, 3, 3)


def test_default_changes_only_attn2_kv(tiny_model):
    run = gu.erase(tiny_model, "doco", "star", preset="smoke")
    names = set(run.result.changed)
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)


def test_surgery_removes_real_conflicts_during_training(tiny_model):
    run = gu.erase(tiny_model, "doco", "star", preset="smoke", steps=14, warm_up=2)
    info = run.result.info
    # the adversarial and preservation gradients did conflict at some step ...
    assert info["min_inner_raw"] < 0
    # ... and no applied update conflicted with preservation
    assert info["min_inner_applied"] >= -1e-9


def test_discriminator_step_learns_to_separate_anchor_from_target():
    torch.manual_seed(0)
    disc = PatchDiscriminator(4, 8, width=8)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        real = torch.randn(8, 4, 8, 8, generator=g) + 1.0  # "anchor" clean estimates
        fake = torch.randn(8, 4, 8, 8, generator=g) - 1.0  # "target" clean estimates
        losses.append(discriminator_step(disc, opt, real, fake))
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


def test_discriminator_trains_at_every_step_of_a_run(tiny_model):
    run = gu.erase(tiny_model, "doco", "striped", preset="smoke", steps=6, warm_up=3)
    d = run.result.info["d_losses"]
    # one discriminator update per warm-up step and per UNet step, and its loss moves
    assert len(d) == 6 and len(set(d)) > 1


def test_warm_up_must_leave_unet_steps(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="warm_up must be in"):
        gu.erase(tiny_model, "doco", "star", preset="smoke", steps=4, warm_up=4)
