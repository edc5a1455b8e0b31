"""Closed-form K/V edit: the solution is the least-squares optimum and behaves at its limits."""

from __future__ import annotations

import torch

from genunlearn.core.closed_form import least_squares_edit

g = torch.Generator().manual_seed(0)
W = torch.randn(6, 5, generator=g, dtype=torch.float64)
CE = torch.randn(2, 5, generator=g, dtype=torch.float64)
V = torch.randn(2, 6, generator=g, dtype=torch.float64)
CP = torch.randn(2, 5, generator=g, dtype=torch.float64)


def _objective(w2, lam, se, sp):
    return (
        se * ((w2 @ CE.T).T - V).pow(2).sum()
        + sp * ((w2 - W) @ CP.T).pow(2).sum()
        + lam * (w2 - W).pow(2).sum()
    )


def test_solution_is_a_stationary_point_of_the_objective():
    w2 = least_squares_edit(W, CE, V, CP, lam=0.7, erase_scale=2.0, preserve_scale=3.0)
    w2 = w2.clone().requires_grad_(True)
    _objective(w2, 0.7, 2.0, 3.0).backward()
    assert w2.grad.abs().max() < 1e-8
    # and it beats random perturbations
    base = _objective(w2.detach(), 0.7, 2.0, 3.0)
    for _ in range(5):
        pert = w2.detach() + 1e-3 * torch.randn(W.shape, generator=g, dtype=torch.float64)
        assert _objective(pert, 0.7, 2.0, 3.0) > base


def test_limits_map_edits_keep_preserves_and_stay_close():
    w2 = least_squares_edit(W, CE, V, CP, lam=1e-6, erase_scale=1.0, preserve_scale=1.0)
    assert torch.allclose(w2 @ CE.T, V.T, atol=1e-5)  # edit rows hit their targets
    assert torch.allclose(w2 @ CP.T, W @ CP.T, atol=1e-5)  # preserve rows unchanged
    w3 = least_squares_edit(W, CE, V, CP, lam=1e9)
    assert torch.allclose(w3, W, atol=1e-6)  # a huge lam keeps the old weight


def test_dtype_and_shape_are_kept():
    w = W.float()
    out = least_squares_edit(w, CE.float(), V.float(), None)
    assert out.dtype == torch.float32 and out.shape == w.shape
