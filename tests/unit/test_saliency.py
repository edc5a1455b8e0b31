"""Saliency masks: a global top fraction of |gradient|, exact in size, deterministic on ties."""

from __future__ import annotations

import pytest
import torch

from genunlearn.core.saliency import accumulate_gradients, saliency_mask, top_fraction_mask
from genunlearn.types import GenUnlearnError


def test_threshold_is_global_not_per_tensor():
    scores = {"small": torch.full((4, 5), 0.1), "large": torch.arange(1.0, 11.0)}
    mask = top_fraction_mask(scores, 0.3)  # 30 entries -> 9 kept
    assert int(mask["small"].sum()) == 0  # a per-tensor threshold would keep some of these
    assert mask["large"].tolist() == [0.0] + [1.0] * 9


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.37, 1.0])
def test_mask_keeps_exactly_the_fraction_even_with_ties(fraction):
    scores = {"a": torch.ones(7, 3), "b": torch.ones(11), "c": torch.zeros(5)}
    mask = top_fraction_mask(scores, fraction)
    total = 21 + 11 + 5
    assert sum(int(m.sum()) for m in mask.values()) == int(fraction * total)
    assert all(m.shape == scores[n].shape and m.dtype == torch.float32 for n, m in mask.items())
    # ties at the threshold go to earlier tensors / entries first
    flat = torch.cat([mask[n].reshape(-1) for n in "abc"])
    assert torch.equal(flat, torch.sort(flat, descending=True, stable=True).values)


def test_mask_picks_the_largest_scores():
    g = torch.Generator().manual_seed(0)
    scores = {"w": torch.rand(10, 10, generator=g), "b": torch.rand(10, generator=g)}
    mask = top_fraction_mask(scores, 0.5)
    kept = torch.cat([scores[n][mask[n].bool()] for n in scores])
    dropped = torch.cat([scores[n][~mask[n].bool()] for n in scores])
    assert len(kept) == 55 and kept.min() > dropped.max()


def test_bad_fraction_and_nan_scores_are_clear_errors():
    with pytest.raises(GenUnlearnError, match=r"fraction must be in \[0, 1\]"):
        top_fraction_mask({"a": torch.ones(3)}, 1.5)
    with pytest.raises(GenUnlearnError, match="NaN"):
        top_fraction_mask({"a": torch.tensor([1.0, float("nan")])}, 0.5)


def test_accumulated_gradient_is_the_sum_over_batches_and_flags_are_restored():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]), requires_grad=False)
    xs = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, -1.0])]
    grads = accumulate_gradients({"w": w}, lambda i: (w * xs[i]).sum() ** 2, 2)
    want = sum(2 * (w.detach() * x).sum() * x for x in xs)
    assert torch.allclose(grads["w"], want)
    assert not w.requires_grad and w.grad is None


def test_saliency_uses_gradient_magnitude():
    # the loss falls along w[0] (negative gradient) and barely moves along w[1]
    w = torch.nn.Parameter(torch.zeros(3))
    mask = saliency_mask({"w": w}, lambda i: -5 * w[0] + 0.1 * w[1] + 0.0 * w[2], 1, 1 / 3)
    assert mask["w"].tolist() == [1.0, 0.0, 0.0]
