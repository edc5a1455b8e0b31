"""Closed-form least-squares edits of linear projections (UCE, MACE).

For a projection W (out x in), find W' minimising

    s_e * sum_i ||W' c_i - v_i||^2  +  s_p * sum_j ||W' c_j - W c_j||^2  +  lam * ||W' - W||_F^2

over edit inputs c_i with targets v_i and preserve inputs c_j. Setting the gradient to zero gives
W' = W + D with

    D A = s_e (V^T - W C_e^T) C_e,    A = lam I + s_e C_e^T C_e + s_p C_p^T C_p

(the same W' as the papers' (lam W + s_e V^T C_e + s_p W C_p^T C_p) A^-1), solved in float64.

Conditioning: A is symmetric positive semi-definite. When the inputs do not span the whole text
space (few prompts, lam = 0, or a text encoder whose final LayerNorm leaves a null direction), A
is singular or nearly so, and a plain solve returns arbitrary (typically huge) weights along the
directions no input determines. Rule: A is inverted as a pseudo-inverse with relative cutoff
eps (the convention of ``numpy.linalg.lstsq``'s rcond): eigen-directions of A whose eigenvalue is
below ``eps * max eigenvalue`` get no change, eps being the machine epsilon of the inputs' dtype
(float32: 1.2e-7), because the Gram matrix of rounded inputs carries rounding noise of that
relative size. W keeps its action along those directions (the least-squares solution that
changes W least); every other direction is solved exactly as published. Non-finite inputs and
negative weights are refused with a :class:`GenUnlearnError`.
"""

from __future__ import annotations

import math

import torch

from genunlearn.types import GenUnlearnError


def _check(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise GenUnlearnError(
            f"closed-form edit: the {name} contain NaN or inf values; the model's text encoder or "
            "weights are not finite (check the model and the prompts)"
        )


def least_squares_edit(
    weight: torch.Tensor,
    edit_inputs: torch.Tensor,
    edit_targets: torch.Tensor,
    preserve_inputs: torch.Tensor | None = None,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
    report: dict | None = None,
) -> torch.Tensor:
    """The edited weight W' (same dtype and shape as ``weight``); see the module docstring.

    Args:
        weight: W, [out, in].
        edit_inputs: C_e, [n, in] (rows are input vectors to remap).
        edit_targets: V, [n, out] (what W' should map each edit row to).
        preserve_inputs: C_p, [m, in] (rows whose outputs must not change), or None.
        lam: pull towards the old weight (>= 0).
        erase_scale: s_e (>= 0).
        preserve_scale: s_p (>= 0).
        report: if given, receives ``condition`` (largest / smallest eigenvalue of A, inf when
            singular), ``regularised`` (how many eigen-directions fell below the cutoff and kept W) and
            ``relative_change`` (||W' - W|| / ||W||).

    Raises:
        GenUnlearnError: non-finite inputs, a negative or non-finite lam or scale.
    """
    for name, val in (
        ("lam", lam),
        ("erase_scale", erase_scale),
        ("preserve_scale", preserve_scale),
    ):
        if not math.isfinite(val) or val < 0:
            raise GenUnlearnError(
                f"closed-form edit: {name} must be a finite number >= 0, got {val}"
            )
    inputs = [edit_inputs] + ([preserve_inputs] if preserve_inputs is not None else [])
    for name, x in (("weights", weight), ("edit inputs", edit_inputs),
                    ("edit targets", edit_targets), ("preserve inputs", preserve_inputs)):  # fmt: skip
        if x is not None:
            _check(name, x)
    w = weight.double()
    ce, v = edit_inputs.to(w.device, torch.float64), edit_targets.to(w.device, torch.float64)
    d = w.shape[1]
    gram = erase_scale * ce.T @ ce
    if preserve_inputs is not None and len(preserve_inputs):
        cp = preserve_inputs.to(w.device, torch.float64)
        gram = gram + preserve_scale * cp.T @ cp
    a = lam * torch.eye(d, dtype=torch.float64, device=w.device) + gram
    # solve for the change D (not W'), so that a direction left out of the pseudo-inverse keeps
    # W's action there instead of being set to zero
    rhs = erase_scale * (v.T - w @ ce.T) @ ce
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    evals = evals.clamp_min(0)
    top = float(evals[-1])
    eps = max(torch.finfo(x.dtype).eps for x in [weight, *inputs] if x.is_floating_point())
    floor = eps * top
    cut = evals <= floor
    inv = torch.where(cut, torch.zeros_like(evals), 1 / evals.clamp_min(1e-300))
    delta = ((rhs @ evecs) * inv) @ evecs.T
    if report is not None:
        low = float(evals[0])
        report["condition"] = top / low if low > 0 else math.inf
        report["regularised"] = int(cut.sum())
        report["relative_change"] = float(delta.norm() / w.norm().clamp_min(1e-300))
    return (w + delta).to(weight.dtype)
