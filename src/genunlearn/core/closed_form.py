"""Closed-form least-squares edits of linear projections (UCE, and later MACE / RECE / SepME).

For a projection W (out x in), find W' minimising

    s_e * sum_i ||W' c_i - v_i||^2  +  s_p * sum_j ||W' c_j - W c_j||^2  +  lam * ||W' - W||_F^2

over edit inputs c_i with targets v_i and preserve inputs c_j. Setting the gradient to zero gives

    W' = (lam W + s_e V^T C_e + s_p W C_p^T C_p) (lam I + s_e C_e^T C_e + s_p C_p^T C_p)^-1

which is solved (not inverted) in float64 for stability.
"""

from __future__ import annotations

import torch


def least_squares_edit(
    weight: torch.Tensor,
    edit_inputs: torch.Tensor,
    edit_targets: torch.Tensor,
    preserve_inputs: torch.Tensor | None = None,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """The edited weight W' (same dtype and shape as ``weight``).

    Args:
        weight: W, [out, in].
        edit_inputs: C_e, [n, in] (rows are input vectors to remap).
        edit_targets: V, [n, out] (what W' should map each edit row to).
        preserve_inputs: C_p, [m, in] (rows whose outputs must not change), or None.
        lam: pull towards the old weight.
        erase_scale: s_e.
        preserve_scale: s_p.
    """
    w = weight.double()
    ce, v = edit_inputs.double(), edit_targets.double()
    d = w.shape[1]
    lhs = lam * torch.eye(d, dtype=torch.float64) + erase_scale * ce.T @ ce
    rhs = lam * w + erase_scale * v.T @ ce
    if preserve_inputs is not None and len(preserve_inputs):
        cp = preserve_inputs.double()
        lhs = lhs + preserve_scale * cp.T @ cp
        rhs = rhs + preserve_scale * (w @ cp.T) @ cp
    # W' lhs = rhs  <=>  lhs^T W'^T = rhs^T (lhs is symmetric)
    return torch.linalg.solve(lhs, rhs.T).T.to(weight.dtype)
