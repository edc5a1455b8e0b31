"""SepME's signature: per-concept K/V shifts in the null space of the other concepts, so any one
concept can be restored exactly while the others stay erased."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.methods.sepme import null_basis, restore


def _eps(model, prompt):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *model.latent_shape, generator=g)
    with torch.no_grad():
        return model.predict_noise(x, torch.tensor([200, 700]), model.encode_prompt([prompt] * 2))


@pytest.fixture(scope="module")
def two(tiny_model):
    return gu.erase(
        tiny_model,
        "sepme",
        gu.ErasureTask(("star", "striped")),
        preset="smoke",
        max_steps=4,
        lr=0.5,
    )


def test_shifts_lie_in_the_null_space_of_the_other_concepts(tiny_model, two):
    shifts = two.result.info["shifts"]
    with torch.no_grad():
        say = (
            tiny_model.world.prompt
        )  # SepME's concept prompt: "a star", "a shape in striped style"
        e = {t: tiny_model.encode_prompt([p])[0] for t, p in
             (("star", say("star")), ("striped", say("striped")), ("", ""))}  # fmt: skip
    for concept, other in (("star", "striped"), ("striped", "star")):
        for dw in shifts.delta[concept].values():
            assert dw.abs().max() > 0
            assert (e[other] @ dw.T).abs().max() < 1e-4 * (e[concept] @ dw.T).abs().max() + 1e-7
            assert (e[""] @ dw.T).abs().max() < 1e-4 * (e[concept] @ dw.T).abs().max() + 1e-7


def test_restoring_one_concept_is_exact_and_keeps_the_other_erased(tiny_model, two):
    back = restore(two, "star")
    star, striped = tiny_model.world.prompt("star"), tiny_model.world.prompt("striped")
    base_star, base_striped = _eps(tiny_model, star), _eps(tiny_model, striped)
    assert not torch.allclose(_eps(two.model, star), base_star, atol=1e-4)
    # exact up to float32 round-off of subtracting the shift (measured up to 2.6e-6 on O(1)
    # predictions with the 6-token phrase prompts), far below the erasure's effect (> 1e-4)
    torch.testing.assert_close(_eps(back, star), base_star, rtol=0, atol=1e-5)
    # the other concept is still erased, exactly as in the erased model
    torch.testing.assert_close(_eps(back, striped), _eps(two.model, striped), rtol=0, atol=1e-5)
    assert not torch.allclose(_eps(back, striped), base_striped, atol=1e-4)
    # the unconditional prediction never moved (the shift is orthogonal to its keys: only
    # float32 round-off, measured up to 2.4e-6, remains)
    torch.testing.assert_close(_eps(two.model, ""), _eps(tiny_model, ""), rtol=0, atol=1e-5)


def test_null_basis_is_orthonormal_and_annihilates_rows():
    rows = torch.randn(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = null_basis(rows, 1e-9, 100)
    assert b.shape == (7, 12)
    torch.testing.assert_close(b @ b.T, torch.eye(7, dtype=torch.float64))
    assert (rows @ b.T).abs().max() < 1e-10
    assert null_basis(rows, 1e-9, 3).shape == (3, 12)


def test_sepme_bad_input_is_a_clear_error(tiny_model, two):
    with pytest.raises(gu.GenUnlearnError, match="null_tol must be in"):
        gu.erase(tiny_model, "sepme", "star", preset="smoke", null_tol=2.0)
    with pytest.raises(gu.GenUnlearnError, match="not erased"):
        restore(two, "heart")


def _cie(model, base, prompt):
    """SepME's CiE statistic on held-out noise: mean[(eps(x_t, c) - eps_0(x_t, "")) *
    (eps_0(x_t, c) - eps_0(x_t, ""))], eps_0 the base model."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, *base.latent_shape, generator=g)
    t = torch.randint(0, base.scheduler.config.num_train_timesteps, (8,), generator=g)
    with torch.no_grad():
        c, e = base.encode_prompt([prompt] * 8), base.encode_prompt([""] * 8)
        e0 = base.predict_noise(x, t, e)
        d0 = base.predict_noise(x, t, c) - e0
        return float(((model.predict_noise(x, t, c) - e0) * d0).mean()), float((d0 * d0).mean())


LONG = dict(preset="smoke", max_steps=20, min_steps=20, threshold=-1e9, lr=0.05)


def test_cie_turns_the_concept_direction_against_the_original(tiny_model):
    """CiE's gradient is a fixed push along -(eps_0(c) - eps_0("")): trained long enough the
    model's concept direction becomes anti-correlated with the base model's (a loss that only
    shrank the model's own direction would stop at zero; the opposite sign would grow it)."""
    run = gu.erase(tiny_model, "sepme", "star", beta=0.0, **LONG)
    after, before = _cie(run.model, tiny_model, tiny_model.world.prompt("star"))
    assert before > 0
    assert after < -0.5 * before
    assert run.result.info["concepts"]["star"]["final_ema"] < 0


def test_l1_term_shrinks_the_shift(tiny_model):
    free = gu.erase(tiny_model, "sepme", "star", beta=0.0, **LONG)
    sparse = gu.erase(tiny_model, "sepme", "star", beta=1e-4, **LONG)

    def l1(run):
        delta = run.result.info["shifts"].delta["star"]
        return sum(float(d.abs().sum()) for d in delta.values())

    assert l1(sparse) < 0.5 * l1(free)


def test_training_stops_once_the_momentum_statistic_falls_below_the_threshold(tiny_model):
    kw = dict(preset="smoke", max_steps=6, min_steps=2)
    stop = gu.erase(tiny_model, "sepme", "star", threshold=1e9, **kw)  # below at once
    never = gu.erase(tiny_model, "sepme", "star", threshold=-1e9, **kw)  # never below
    assert stop.result.info["concepts"]["star"]["steps"] == 2  # min_steps, then stop
    assert never.result.info["concepts"]["star"]["steps"] == 6  # max_steps
