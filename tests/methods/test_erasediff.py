"""EraseDiff's signature: the update uses both the remain and the forget objective, and the inner
problem only supplies f* (its weights are restored before the outer step)."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu


def _delta(model, **kw):
    """theta - theta_0 after one plain SGD outer step (so the update is -lr * gradient)."""
    run = gu.erase(
        model, "erasediff", "star", preset="smoke", seed=0, optimizer="sgd", lr=1.0,
        steps_per_pass=1, epochs=1, train_method="xattn", **kw,
    )  # fmt: skip
    base = dict(model.named_parameters())
    new = dict(run.model.named_parameters())
    names = sorted(n for n in base if ".attn2." in n)
    return torch.cat([(new[n] - base[n]).detach().reshape(-1) for n in names])


@pytest.mark.parametrize("pseudo", ["remain", "swap"])
def test_outer_update_is_remain_plus_lambda_forget_gradient(tiny_model, pseudo):
    d0, d1, d2 = (_delta(tiny_model, lam=lam, pseudo=pseudo) for lam in (0.0, 1.0, 2.0))
    forget_part = d1 - d0
    assert d0.norm() > 0  # the remain objective moves the weights
    assert forget_part.norm() > 1e-3 * d0.norm()  # the forget objective does too
    # linear in lambda: the step is -lr (grad r + lambda grad f), f* only shifts the loss
    assert torch.allclose(d2 - d0, 2 * forget_part, rtol=1e-3, atol=1e-7)
    # the combined direction is neither objective alone
    cos = torch.nn.functional.cosine_similarity
    assert cos(d1, d0, dim=0) < 0.9999 and cos(d1, forget_part, dim=0) < 0.9999


def test_inner_problem_is_undone_before_the_outer_step(tiny_model):
    # with lambda = 0 the outer step ignores f*, so the inner passes must leave no trace
    assert torch.equal(_delta(tiny_model, lam=0.0, inner_passes=0), _delta(tiny_model, lam=0.0))
    run = gu.erase(tiny_model, "erasediff", "star", preset="smoke", seed=0, inner_passes=2)
    assert len(run.result.info["f_star"]) == 1 and run.result.info["f_star"][0] > 0


def test_dynamic_lambda_stays_in_range(tiny_model):
    run = gu.erase(tiny_model, "erasediff", "star", preset="smoke", seed=0, lam=-1.0, eta=0.5)
    assert 0.0 <= run.result.info["mean_lambda"] <= 1.5


def test_bad_pseudo_is_a_clear_error(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="pseudo must be 'remain' or 'swap'"):
        gu.erase(tiny_model, "erasediff", "star", preset="smoke", pseudo="random")
