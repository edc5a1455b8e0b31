"""EraseDiff's signature: the outer update is grad r + lambda grad q with the value-function
constraint q = f(theta) - f(theta^K), so the inner solution theta^K shapes the update; the
inner problem's weights are restored before the outer step; the dynamic lambda is BOME's
projection rule."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu


def _delta(model, **kw):
    """theta - theta_0 after one plain SGD outer step (so the update is -lr * gradient)."""
    kw = {"inner_lr": 1e-2, **kw}
    run = gu.erase(
        model, "erasediff", "star", preset="smoke", seed=0, optimizer="sgd", lr=1.0,
        steps_per_pass=1, epochs=1, train_method="xattn", **kw,
    )  # fmt: skip
    base = dict(model.named_parameters())
    new = dict(run.model.named_parameters())
    names = sorted(n for n in base if ".attn2." in n)
    return torch.cat([(new[n] - base[n]).detach().reshape(-1) for n in names])


@pytest.mark.parametrize("pseudo", ["remain", "swap"])
def test_outer_update_is_remain_plus_lambda_constraint_gradient(tiny_model, pseudo):
    d0, d1, d2 = (_delta(tiny_model, lam=lam, pseudo=pseudo) for lam in (0.0, 1.0, 2.0))
    forget_part = d1 - d0
    assert d0.norm() > 0  # the remain objective moves the weights
    assert forget_part.norm() > 1e-3 * d0.norm()  # the constraint does too
    # linear in lambda: the step is -lr (grad r + lambda grad q)
    assert torch.allclose(d2 - d0, 2 * forget_part, rtol=1e-3, atol=1e-7)
    # the combined direction is neither objective alone
    cos = torch.nn.functional.cosine_similarity
    assert cos(d1, d0, dim=0) < 0.9999 and cos(d1, forget_part, dim=0) < 0.9999


def test_the_inner_solution_enters_the_constraint_gradient(tiny_model):
    """grad q = grad f(theta) - grad f(theta^K): where the inner problem did not move
    (theta^K = theta_0), the first outer step has no constraint gradient at all; the official
    update (grad q = grad f, f* a constant) ignores the inner problem."""
    zero = _delta(tiny_model, lam=0.0)  # the remain step alone
    official = _delta(tiny_model, lam=1.0, inner_grad=False) - zero
    assert official.norm() > 0
    # a negligible inner step size leaves theta^K = theta_0: grad f(theta) - grad f(theta^K) = 0
    # (a flipped sign would give 2 grad f, a constant f* grad f)
    still = _delta(tiny_model, lam=1.0, inner_lr=1e-12) - zero
    assert still.norm() <= 1e-6 * official.norm()
    # a real inner problem: the update differs from the official one, and with the inner problem
    part = {lr: _delta(tiny_model, lam=1.0, inner_lr=lr) - zero for lr in (1e-2, 1e-1)}
    assert (part[1e-2] - official).norm() > 1e-3 * official.norm()
    assert (part[1e-1] - part[1e-2]).norm() > 1e-3 * official.norm()
    # the official update does not depend on the inner problem's step size
    other = _delta(tiny_model, lam=1.0, inner_grad=False, inner_lr=1e-1) - zero
    assert torch.allclose(other, official, rtol=1e-4, atol=1e-8)


def test_inner_problem_is_undone_before_the_outer_step(tiny_model):
    # with lambda = 0 the outer step ignores q, so the inner passes must leave no trace
    assert torch.equal(
        _delta(tiny_model, lam=0.0, inner_passes=1), _delta(tiny_model, lam=0.0, inner_passes=2)
    )
    run = gu.erase(tiny_model, "erasediff", "star", preset="smoke", seed=0, inner_passes=2)
    assert len(run.result.info["f_star"]) == 1 and run.result.info["f_star"][0] > 0


def test_bome_lambda_is_the_projection_rule():
    from genunlearn.methods.erasediff import bome_lambda

    g_q = torch.tensor([2.0, 0.0])
    g_f = torch.tensor([3.0, 4.0])  # projection coefficient <g_f, g_q> / |g_q|^2 = 1.5, cos 0.6
    assert bome_lambda(g_f, g_q, eta=2.0) == pytest.approx(0.5)
    assert bome_lambda(g_f, g_q, eta=1.0) == 0.0  # clipped at zero
    assert bome_lambda(-g_f, g_q, eta=0.0) == pytest.approx(1.5)  # opposing F pushes harder
    assert bome_lambda(g_f, torch.zeros(2), eta=2.0) == 0.0  # no constraint direction


def test_dynamic_lambda_used_in_the_update_follows_the_projection_rule(tiny_model):
    """Measure grad r and grad q from one-step updates, then check the lambda the method used."""
    d0, d1 = _delta(tiny_model, lam=0.0), _delta(tiny_model, lam=1.0)
    dq = d1 - d0  # -lr grad q
    proj = float(d0 @ dq / (dq @ dq))  # <grad r, grad q> / |grad q|^2 (the lr cancels)
    cos = float(d0 @ dq / (d0.norm() * dq.norm()))
    eta = proj + 0.5
    want = max(eta - proj, 0.0)
    assert abs(max(eta - cos, 0.0) - want) > 0.05  # the cosine rule would be told apart
    run_delta = _delta(tiny_model, lam=-1.0, eta=eta)
    used = float((run_delta - d0) @ dq / (dq @ dq))
    assert used == pytest.approx(want, rel=1e-3, abs=1e-4)
    assert torch.allclose(run_delta - d0, used * dq, rtol=1e-3, atol=1e-7)


def test_bad_settings_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="pseudo must be 'remain' or 'swap'"):
        gu.erase(tiny_model, "erasediff", "star", preset="smoke", pseudo="random")
    with pytest.raises(gu.GenUnlearnError, match="inner_passes >= 1"):
        gu.erase(tiny_model, "erasediff", "star", preset="smoke", inner_passes=0)
    with pytest.raises(gu.GenUnlearnError, match="inner_lr must be"):
        gu.erase(tiny_model, "erasediff", "star", preset="smoke", inner_lr=-1.0)
