"""Closed-form K/V edit: the solution is the least-squares optimum and behaves at its limits."""

from __future__ import annotations

import pytest
import torch

from genunlearn.core.closed_form import least_squares_edit
from genunlearn.types import GenUnlearnError

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


def test_rank_deficient_system_is_regularised_to_the_minimum_change_solution():
    """lam = 0 and edit rows spanning 2 of 5 directions (plus float32 rounding-level noise, as text
    states carry): a plain solve blows the weights up along the 3 unreached directions."""
    gen = torch.Generator().manual_seed(1)
    basis = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    ce = torch.randn(6, 2, generator=gen, dtype=torch.float64) @ basis
    ce32 = (ce + 1e-8 * torch.randn(ce.shape, generator=gen, dtype=torch.float64)).float()
    w = W.float()
    v = torch.randn(6, 6, generator=gen).float()  # inconsistent targets: no exact fit exists
    report = {}
    w2 = least_squares_edit(w, ce32, v, None, lam=0.0, report=report).double()
    assert report["regularised"] == 3 and report["condition"] > 1e7
    # the least-squares fit that changes W least: W + (V^T - W C^T) pinv(C^T)
    want = W + (v.double().T - W @ ce.T) @ torch.linalg.pinv(ce.T)
    assert torch.allclose(w2, want, atol=1e-4)
    assert report["relative_change"] == pytest.approx(float((want - W).norm() / W.norm()), rel=1e-3)
    # directions no edit row reaches keep W's action
    null = torch.linalg.svd(basis, full_matrices=True).Vh[2:]
    assert ((w2 - W) @ null.T).abs().max() < 1e-4


def test_well_conditioned_system_is_not_regularised():
    report = {}
    least_squares_edit(W, CE, V, CP, lam=0.5, report=report)
    assert report["regularised"] == 0 and report["condition"] < 1e6


def test_non_finite_inputs_and_negative_weights_are_refused():
    bad = CE.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(GenUnlearnError, match="edit inputs contain NaN or inf"):
        least_squares_edit(W, bad, V, CP)
    with pytest.raises(GenUnlearnError, match="lam must be a finite number >= 0, got -1"):
        least_squares_edit(W, CE, V, CP, lam=-1.0)
    with pytest.raises(GenUnlearnError, match="preserve_scale must be"):
        least_squares_edit(W, CE, V, CP, preserve_scale=float("inf"))
