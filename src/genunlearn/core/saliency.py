"""Gradient saliency masks: which weights a loss cares about most (SalUn, and later pruning methods).

SalUn (Fan et al., ICLR 2024, https://arxiv.org/abs/2310.12508) scores every weight by the
magnitude of the forget loss's gradient, summed over one pass of the forget set, and keeps the
weights whose score is in the *global* top fraction (one threshold over all scored tensors, not
one per tensor). The official code ranks the concatenated scores with ``argsort``; here the
threshold is the k-th largest score (``kthvalue``, less memory on a full SD UNet) and ties at the
threshold are broken by position (tensor order, then flat index), so exactly
``int(fraction * total)`` entries are kept and the result does not depend on the sort algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genunlearn.types import GenUnlearnError


def accumulate_gradients(
    params: dict[str, torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    n_batches: int,
) -> dict[str, torch.Tensor]:
    """Sum over ``i < n_batches`` of the gradient of ``loss_fn(i)`` with respect to ``params``.

    Gradients are switched on for ``params`` only while this runs; the parameters' own ``.grad``
    fields and ``requires_grad`` flags are left as they were.

    Args:
        params: named parameters to differentiate.
        loss_fn: ``batch index -> scalar loss``.
        n_batches: batches to sum over.
    """
    names = list(params)
    plist = [params[n] for n in names]
    flags = [p.requires_grad for p in plist]
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    try:
        for p in plist:
            p.requires_grad_(True)
        for i in range(n_batches):
            grads = torch.autograd.grad(loss_fn(i), plist, allow_unused=True)
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    total[n] += g.float()
    finally:
        for p, f in zip(plist, flags, strict=True):
            p.requires_grad_(f)
    return total


def top_fraction_mask(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """0/1 masks (float32, shaped like each score) keeping the global top ``fraction`` of scores.

    Exactly ``int(fraction * total)`` entries are 1 (the official code's ``int(len * threshold)``);
    among equal scores at the threshold, earlier tensors and earlier entries win.

    Raises:
        GenUnlearnError: ``fraction`` outside [0, 1], no scores, or a NaN score.
    """
    if not 0.0 <= fraction <= 1.0:
        raise GenUnlearnError(f"mask fraction must be in [0, 1], got {fraction}")
    if not scores:
        raise GenUnlearnError("a saliency mask needs at least one scored tensor")
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    if torch.isnan(flat).any():
        raise GenUnlearnError("saliency scores contain NaN (the loss diverged)")
    n = flat.numel()
    k = int(fraction * n)
    keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k > 0:
        thr = torch.kthvalue(flat, n - k + 1).values  # the k-th largest score
        keep = flat > thr
        need = k - int(keep.sum())
        ties = torch.nonzero(flat == thr).squeeze(1)[:need]
        keep[ties] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].reshape(s.shape).float()
        start += s.numel()
    return out


def saliency_mask(
    params: dict[str, torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    n_batches: int,
    fraction: float,
) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency: the global top ``fraction`` of ``|sum_i grad loss_fn(i)|``.

    Args:
        params: the scored parameters (the threshold is global over all of them).
        loss_fn: ``batch index -> scalar loss`` (the forget loss).
        n_batches: batches to accumulate the gradient over (one pass of the forget set).
        fraction: share of weights to keep (SalUn: 0.5).

    Returns:
        Parameter name -> 0/1 float mask of the same shape.
    """
    grads = accumulate_gradients(params, loss_fn, n_batches)
    return top_fraction_mask({n: g.abs_() for n, g in grads.items()}, fraction)
