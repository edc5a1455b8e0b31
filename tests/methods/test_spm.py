"""SPM's signature: a rank-1 adapter on the transformer blocks, its own small file, base weights
untouched, facilitated transport, and several SPMs applied together."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn import runs
from genunlearn.methods.spm import sample_anchors
from genunlearn.models import addons


@pytest.fixture(scope="module")
def two_runs(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    a = gu.erase(tiny_model, "spm", "star", d / "star", preset="smoke", samples=False)
    b = gu.erase(tiny_model, "spm", "striped", d / "striped", preset="smoke", samples=False)
    return a, b


def _eps(model, prompt: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *model.latent_shape, generator=g)
    with torch.no_grad():
        return model.predict_noise(x, torch.tensor(500), model.encode_prompt([prompt] * 2))


def test_spm_is_a_rank_one_adapter_on_every_transformer_layer(tiny_model, two_runs):
    run, _ = two_runs
    assert run.result.changed == {}  # the base weights are untouched
    addon = run.result.addon
    layers = addons.transformer_modules(tiny_model.denoiser)
    assert {k.rsplit(".", 1)[0] for k in addon.tensors} == set(layers)
    kinds = {type(m).__name__ for m in layers.values()}
    assert "Linear" in kinds and any(".attn2.to_k" in n for n in layers)
    for name in layers:
        assert addon.tensors[f"{name}.lora_down"].shape[0] == 1
        assert addon.tensors[f"{name}.lora_up"].shape[1] == 1
    assert any(v.abs().sum() > 0 for k, v in addon.tensors.items() if k.endswith("lora_up"))
    assert addons.attached(run.model) and not addons.attached(tiny_model)


def test_spm_file_is_its_own_small_artifact(tiny_model, two_runs):
    run, _ = two_runs
    assert (run.path / runs.ADDON).is_file()
    assert run.record["changed_tensors"] == 0 and run.record["addon"]["kind"] == "spm"
    unet_bytes = sum(p.numel() * 4 for p in tiny_model.denoiser.parameters())
    assert (run.path / runs.ADDON).stat().st_size < 0.1 * unet_bytes
    loaded = gu.load_run(run.path, model=tiny_model)
    assert len(addons.attached(loaded)) == 1
    assert torch.equal(
        _eps(loaded, "a red star in flat style"), _eps(run.model, "a red star in flat style")
    )


def test_spm_switched_off_is_the_base_model_and_on_changes_the_target(tiny_model, two_runs):
    run, _ = two_runs
    p = "a red star in flat style"
    with addons.multiplier(run.model, 0, 0.0):
        assert torch.equal(_eps(run.model, p), _eps(tiny_model, p))
    assert not torch.equal(_eps(run.model, p), _eps(tiny_model, p))


def test_facilitated_transport_opens_for_the_target_only(two_runs):
    run, _ = two_runs
    _eps(run.model, "a red star in flat style")
    assert torch.allclose(addons.last_multipliers(run.model), torch.ones(2, 1))
    _eps(run.model, "a red circle in flat style")
    m = addons.last_multipliers(run.model)
    assert (m < 1).all() and (m >= 0).all()  # max(cosine, token overlap 0)


def test_two_spms_apply_together(tiny_model, two_runs):
    a, b = two_runs
    both = gu.load_run([a.path, b.path], model=tiny_model)
    assert [x.meta["prompts"] for x in addons.attached(both)] == [["star"], ["striped style"]]
    p = "a red star in striped style"
    eps = _eps(both, p)
    assert torch.allclose(addons.last_multipliers(both), torch.ones(2, 2))
    assert not torch.allclose(eps, _eps(a.model, p)) and not torch.allclose(eps, _eps(b.model, p))
    # the adapters' terms are summed, so the order of loading does not matter
    swapped = gu.load_run([b.path, a.path], model=tiny_model)
    assert torch.allclose(_eps(swapped, p), eps, atol=1e-6)
    # switching one off leaves exactly the other SPM
    with addons.multiplier(both, 1, 0.0):
        assert torch.allclose(_eps(both, p), _eps(a.model, p), atol=1e-6)


def test_spm_for_another_base_model_is_refused(tiny_model, two_runs):
    run, _ = two_runs
    other = tiny_model.copy()
    other._hash = "f" * 64
    with pytest.raises(gu.GenUnlearnError, match="hash"):
        gu.load_run(run.path, model=other)
    with pytest.raises(gu.GenUnlearnError, match=r"hash .*ffffffffffff"):
        runs.load_addon(run.path, other.base_hash)


def test_rank_out_of_range_is_a_clear_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match=r"rank 0 is out of range.*valid: 1\.\."):
        gu.erase(tiny_model, "spm", "star", preset="smoke", rank=0)


def test_latent_anchors_are_rescaled_random_conditionings():
    target = torch.randn(8, 16)
    a = sample_anchors(target, 5, torch.Generator().manual_seed(0))
    b = sample_anchors(target, 5, torch.Generator().manual_seed(0))
    assert a.shape == (5, 8, 16) and torch.equal(a, b)
    ratio = a.flatten(1).norm(dim=1) / target.norm()
    assert ((ratio >= 0.8 - 1e-5) & (ratio <= 1.2 + 1e-5)).all()
    assert not torch.allclose(a[0], a[1])


def test_spm_is_deterministic_for_a_seed(tiny_model, two_runs):
    run, _ = two_runs
    again = gu.erase(tiny_model, "spm", "star", preset="smoke", samples=False)
    for k, v in run.result.addon.tensors.items():
        assert torch.equal(v, again.result.addon.tensors[k])


# --- the objective, pinned at the first training step ---------------------------------------


def test_loss_is_the_erase_target_of_the_base_plus_latent_anchoring(tiny_model, first_loss):
    """Erase term: x_t from a partial run *with* the adapter, the target from the base model
    (adapter off) pushed away from the concept; anchoring: adapted vs base predictions on random
    conditionings. Fails if either term is dropped, the target or the anchor's reference comes
    from the adapted model, the trajectory runs without the adapter, or the guidance flips.

    The adapter is first set to random non-zero weights (its up projection starts at zero, where
    the adapted model *is* the base model), so that a prediction taken with the adapter on where
    it should be off (or the reverse) shows."""
    from genunlearn.core.sampling import partial_trajectory

    b, n_anchor, g_scale, la, n_ddim, cfg_scale = 2, 2, 2.0, 3.0, 3, 3.0
    student, params, loss, grads, seed, _ = first_loss(
        "spm", tiny_model, gu.ErasureTask("star"), nudge=lambda p, z: 0.3 * z, batch_size=b,
        anchor_batch=n_anchor, guidance=g_scale, la_strength=la, ddim_steps=n_ddim,
        start_guidance=cfg_scale,
    )  # fmt: skip
    assert addons.attached(student) and not addons.attached(tiny_model)
    g = torch.Generator().manual_seed(seed)
    torch.randint(1, (1,), generator=g)  # the prompt pair (one pair: "star" vs "")
    k = int(torch.randint(1, n_ddim, (1,), generator=g))
    with torch.no_grad():
        emb = tiny_model.encode_prompt(["star", ""])
    c, n = emb[:1].expand(b, -1, -1), emb[1:].expand(b, -1, -1)
    noise = torch.randn((b, *tiny_model.latent_shape), generator=g)
    x_t, t = partial_trajectory(student, c, n, n_ddim, k, cfg_scale, noise)
    with torch.no_grad():
        e_pos, e_neu = tiny_model.predict_noise(x_t, t, c), tiny_model.predict_noise(x_t, t, n)
    erase = (student.predict_noise(x_t, t, c) - (e_neu - g_scale * (e_pos - e_neu))).pow(2).mean()
    anchors = sample_anchors(emb[0], n_anchor, g).repeat_interleave(b, 0)
    x_a = x_t.repeat(n_anchor, 1, 1, 1)
    with torch.no_grad():
        a_base = tiny_model.predict_noise(x_a, t, anchors)
    anchoring = (student.predict_noise(x_a, t, anchors) - a_base).pow(2).mean()
    want = erase + la * anchoring
    assert anchoring.item() > 1e-3 * erase.item()  # both terms count
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    for got, ref in zip(grads, torch.autograd.grad(want, list(params.values())), strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
