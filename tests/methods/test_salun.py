"""SalUn's signature: a saliency mask of the configured fraction, and only masked weights move."""

from __future__ import annotations

import torch
from torch.nn import functional as F

import genunlearn as gu
from genunlearn import registry
from genunlearn.methods import salun


def _smoke_cfg(**kw):
    from genunlearn.config import build_config

    entry = registry.get("method", "salun")
    return build_config(entry.config, entry.presets["smoke"], kw)


def _mask(model, seed, **kw):
    """The mask ``gu.erase(..., seed=seed)`` computes (same data, same seed)."""
    cfg = _smoke_cfg(**kw)
    work = model.copy()
    forget, _, _ = salun.build_sets(work, gu.ErasureTask("star"), cfg)
    return salun.compute_mask(work, forget, cfg, seed=seed)


def _changed_entries(model, run):
    base = dict(model.named_parameters())
    return {n: (v != base[n].detach()) for n, v in run.result.changed.items()}


def test_only_weights_inside_the_mask_change(tiny_model):
    mask = _mask(tiny_model, seed=0, mask_fraction=0.2)
    run = gu.erase(tiny_model, "salun", "star", preset="smoke", seed=0, mask_fraction=0.2)
    moved = _changed_entries(tiny_model, run)
    assert sum(int(m.sum()) for m in moved.values()) > 0
    for n, m in moved.items():
        assert n in mask, f"{n} changed but is outside the mask scope"
        assert not (m & (mask[n] == 0)).any(), f"{n} changed outside its saliency mask"


def test_mask_has_the_configured_fraction(tiny_model):
    for fraction in (0.5, 0.1):
        mask = _mask(tiny_model, seed=1, mask_fraction=fraction)
        total = sum(m.numel() for m in mask.values())
        assert sum(int(m.sum()) for m in mask.values()) == int(fraction * total)
    run = gu.erase(tiny_model, "salun", "star", preset="smoke", seed=1)
    assert run.result.info["scored_weights"] == sum(
        p.numel() for n, p in tiny_model.named_parameters() if n.startswith("unet.")
    )
    assert abs(run.result.info["mask_fraction"] - 0.5) < 1e-6  # paper default


def test_mask_follows_the_forget_gradient_not_chance(tiny_model):
    # two seeds draw different noise but the salient weights largely agree (well above the 50%
    # overlap two random half-masks would have)
    a, b = _mask(tiny_model, seed=0), _mask(tiny_model, seed=5)
    both = sum(int((a[n] * b[n]).sum()) for n in a)
    kept = sum(int(a[n].sum()) for n in a)
    assert both / kept > 0.6


def test_relabelling_pulls_the_target_prediction_to_the_pseudo_prompt(tiny_model):
    run = gu.erase(
        tiny_model, "salun", "star", preset="smoke", seed=0, alpha=0.0, steps=15, lr=3e-3,
        mask_fraction=1.0, train_method="xattn", mask_scope="xattn",
    )  # fmt: skip
    cfg = _smoke_cfg()
    forget, pseudo, _ = salun.build_sets(tiny_model, gu.ErasureTask("star"), cfg)
    assert "heart" in pseudo.prompts[0] and "star" in forget.prompts[0]  # next object in order
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *tiny_model.latent_shape, generator=g)
    c_f = forget.emb[forget.caption[:1]].expand(4, -1, -1)
    c_p = pseudo.emb[pseudo.caption[:1]].expand(4, -1, -1)

    def gap(m):
        with torch.no_grad():
            return F.mse_loss(m.predict_noise(x, 500, c_f), m.predict_noise(x, 500, c_p))

    assert gap(run.model) < 0.5 * gap(tiny_model)
