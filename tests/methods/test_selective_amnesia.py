"""Selective Amnesia's signature: an EWC term from a diagonal Fisher of replay samples."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.core.concept_sets import generate_latents
from genunlearn.core.params import select_parameters
from genunlearn.methods.selective_amnesia import diagonal_fisher, ewc_penalty


def _replay(model, prompts=("a red circle in flat style", "a blue ring in dotted style")):
    return generate_latents(model, list(prompts), 2)


def _kv(model):
    return dict(list(select_parameters(model, "kv").items())[:2])


def test_loss_has_a_nonzero_ewc_term_from_a_nonzero_fisher(tiny_model):
    run = gu.erase(tiny_model, "selective_amnesia", "star", preset="smoke", seed=0, steps=3)
    info = run.result.info
    assert info["fisher_mean"] > 0 and info["fisher_samples"] == 2
    assert info["ewc"][0] == 0.0  # theta == theta* before the first step
    assert max(info["ewc"][1:]) > 0.0


def test_fisher_is_the_mean_squared_per_sample_gradient_summed_over_timesteps(tiny_model):
    m = tiny_model.copy()
    params, data = _kv(m), _replay(m)
    both = diagonal_fisher(m, params, data, n_samples=2, timesteps=4, chunk=4)
    # chunking the timesteps changes nothing: the gradient is summed before it is squared
    chunked = diagonal_fisher(m, params, data, n_samples=2, timesteps=4, chunk=1)
    for n in params:  # (batch sizes differ, so only up to float rounding)
        assert torch.allclose(both[n], chunked[n], rtol=1e-3, atol=1e-4 * float(both[n].max()))
    # sample 0 alone, by hand: (T/4 * grad of the summed per-timestep MSE)^2
    T = m.scheduler.config.num_train_timesteps
    ts = torch.linspace(0, T - 1, 4).round().long()
    g = torch.Generator().manual_seed(0)
    z0 = data.latents[:1].expand(4, -1, -1, -1)
    noise = torch.randn(z0.shape, generator=g)
    for p in params.values():
        p.requires_grad_(True)
    pred = m.predict_noise(m.scheduler.add_noise(z0, noise, ts), ts, data.emb[[0] * 4])
    loss = (pred - noise).pow(2).mean(dim=(1, 2, 3)).sum() * (T / 4)
    grads = torch.autograd.grad(loss, list(params.values()))
    one = diagonal_fisher(m, params, data, n_samples=1, timesteps=4, chunk=4)
    for (n, _), gr in zip(params.items(), grads, strict=True):
        assert torch.allclose(one[n], gr.pow(2), rtol=1e-3, atol=1e-4 * float(one[n].max()))
        # averaging over samples happens after squaring (not the square of the mean gradient)
        assert not torch.allclose(both[n], one[n])


def test_fisher_depends_on_the_replay_samples(tiny_model):
    m = tiny_model.copy()
    params = _kv(m)
    a = diagonal_fisher(m, params, _replay(m), 2, 4, 4)
    b = diagonal_fisher(m, params, _replay(m, ("a green moon in wavy style",) * 2), 2, 4, 4)
    assert any(not torch.allclose(a[n], b[n]) for n in params)


def test_ewc_penalty_weights_squared_drift_by_fisher():
    p = {"w": torch.tensor([1.0, 2.0, 3.0])}
    star = {"w": torch.tensor([1.0, 0.0, 1.0])}
    fisher = {"w": torch.tensor([5.0, 0.5, 0.0])}
    assert float(ewc_penalty(p, fisher, star)) == 0.5 * 4


def test_ewc_holds_weights_near_the_original(tiny_model):
    def drift(lam):
        run = gu.erase(
            tiny_model, "selective_amnesia", "star", preset="smoke", seed=0, steps=6, lam=lam
        )
        base = dict(tiny_model.named_parameters())
        return sum(float((v - base[n]).pow(2).sum()) for n, v in run.result.changed.items())

    assert drift(1e8) < 0.5 * drift(0.0)


def test_surrogate_is_the_generic_concept_of_the_kind_unless_asked_otherwise(tiny_model):
    run = gu.erase(tiny_model, "selective_amnesia", "striped", preset="smoke", seed=0)
    assert all("flat style" in p for p in run.result.info["surrogate_prompts"])
    run = gu.erase(tiny_model, "selective_amnesia", "striped", preset="smoke", surrogate="next")
    assert all("dotted style" in p for p in run.result.info["surrogate_prompts"])
    with pytest.raises(gu.GenUnlearnError, match="surrogate must be one of neutral, next"):
        gu.erase(tiny_model, "selective_amnesia", "striped", preset="smoke", surrogate="far")


def test_loss_is_surrogate_plus_replay_plus_ewc_around_the_original(tiny_model, first_loss):
    """L = l(surrogate images, forget captions) + gamma l(replay) + lambda sum F (theta -
    theta*)^2 with theta* the original weights, at step 0 after the trained weights were nudged
    (so the EWC term is not zero): fails if the surrogate images keep their own captions,
    replay or EWC is dropped or flips sign, gamma is misplaced, or theta* is not the original."""
    from genunlearn.core.concept_sets import caption_sets

    lam, gamma, b = 0.3, 0.5, 2
    task = gu.ErasureTask("striped")
    work, params, loss, grads, seed, cfg = first_loss(
        "selective_amnesia", tiny_model, task, nudge=0.2, lam=lam, gamma=gamma, batch_size=b,
        train_method="xattn",
    )  # fmt: skip
    forget_p, surrogate_p, remain_p = caption_sets(tiny_model, task, neutral=True)
    assert all(
        s == f.replace("striped", "flat") for s, f in zip(surrogate_p, forget_p, strict=True)
    )
    q = generate_latents(tiny_model, surrogate_p, cfg.n_surrogate_images)
    replay = generate_latents(tiny_model, remain_p, cfg.n_replay_images)
    with torch.no_grad():
        c_forget = tiny_model.encode_prompt(forget_p)
    base = tiny_model.copy()
    params0 = select_parameters(base, "xattn")
    fisher = diagonal_fisher(base, params0, replay, 2, cfg.fisher_timesteps, cfg.fisher_chunk)
    sched = tiny_model.scheduler
    g = torch.Generator().manual_seed(seed)

    def denoise(data, cond_table):
        i = torch.randint(len(data), (b,), generator=g)
        noise = torch.randn(data.latents[i].shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
        x_t = sched.add_noise(data.latents[i], noise, t)
        return (work.predict_noise(x_t, t, cond_table[data.caption[i]]) - noise).pow(2).mean()

    l_forget = denoise(q, c_forget)  # surrogate images, trained with the *forget* captions
    l_replay = denoise(replay, replay.emb)
    ewc = sum((fisher[n] * (p - params0[n].detach()).pow(2)).sum() for n, p in params.items())
    want = l_forget + gamma * l_replay + lam * ewc
    assert lam * ewc.item() > 0.1 * l_forget.item()  # the EWC term counts
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    refs = torch.autograd.grad(want, list(params.values()))
    for got, ref in zip(grads, refs, strict=True):
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


class _Plant:
    """A pickle that, if unpickled without ``weights_only``, touches a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_damaged_or_planted_fisher_cache_entries_are_recomputed(tiny_model, tmp_path, monkeypatch):
    import pickle

    from genunlearn import registry
    from genunlearn.config import build_config
    from genunlearn.methods.selective_amnesia import cached_fisher

    m = tiny_model.copy()
    params, data = _kv(m), _replay(m)
    entry = registry.get("method", "selective_amnesia")
    cfg = build_config(entry.config, entry.presets["smoke"], {})
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path))
    fresh = cached_fisher(m, params, data, cfg)
    (entry_file,) = tmp_path.rglob("fisher_*.pt")
    marker = tmp_path / "pwned"
    wrong_shape = {n: torch.zeros(3) for n in params}
    for damage in (b"not a checkpoint", pickle.dumps(_Plant(marker)), wrong_shape, {}):
        if isinstance(damage, bytes):
            entry_file.write_bytes(damage)
        else:
            torch.save(damage, entry_file)
        again = cached_fisher(m, params, data, cfg)
        assert not marker.exists()  # the planted pickle never ran
        assert set(again) == set(fresh)
        assert all(torch.allclose(again[n], fresh[n]) for n in fresh)
