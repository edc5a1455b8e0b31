"""Fréchet distance against closed forms on feature sets with exactly known statistics."""

from __future__ import annotations

import math

import pytest
import torch

from genunlearn.metrics.fid import features, fid, frechet_distance


def _exact(n: int, mean, cov, seed: int) -> torch.Tensor:
    """Samples [n, D] whose empirical mean and (unbiased) covariance are exactly ``mean``/``cov``."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    white = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T
    return mean + white @ torch.linalg.cholesky(cov).T


def test_identical_sets_have_zero_distance():
    a = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert abs(frechet_distance(a, a.clone().flip(0))) < 1e-8  # order does not matter


def test_diagonal_gaussians_match_closed_form():
    mu1, mu2 = [0.0, 1.0, -2.0], [1.5, 1.0, 0.5]
    s1, s2 = [1.0, 4.0, 0.25], [9.0, 1.0, 0.25]
    a = _exact(500, mu1, torch.diag(torch.tensor(s1)), seed=1)
    b = _exact(400, mu2, torch.diag(torch.tensor(s2)), seed=2)
    expected = sum((x - y) ** 2 for x, y in zip(mu1, mu2, strict=True)) + sum(
        p + q - 2 * math.sqrt(p * q) for p, q in zip(s1, s2, strict=True)
    )
    # = 1.5^2 + 2.5^2 + (1 + 9 - 6) + (4 + 1 - 4) + 0 = 13.5
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(13.5, rel=1e-6)


def test_non_commuting_2d_covariances_match_closed_form():
    # For 2x2 PSD M: Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)); eig(S1^1/2 S2 S1^1/2) = eig(S1 S2).
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.5], [-0.5, 3.0]], dtype=torch.float64)
    a = _exact(300, [0.0, 0.0], s1, seed=3)
    b = _exact(300, [1.0, -1.0], s2, seed=4)
    tr_sqrt = math.sqrt(
        float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2)))
    )
    expected = 2.0 + float(torch.trace(s1) + torch.trace(s2)) - 2 * tr_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_symmetric_and_rotation_invariant():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(150, 4, generator=g) * torch.tensor([1.0, 2.0, 0.5, 1.0])
    b = torch.randn(120, 4, generator=g) + 0.7
    d = frechet_distance(a, b)
    assert d > 0
    assert frechet_distance(b, a) == pytest.approx(d, rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(d, rel=1e-5)


def test_pure_mean_shift_adds_squared_norm_and_grows():
    a = torch.randn(100, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    dists = []
    for k in (0.5, 1.0, 2.0):
        shift = torch.tensor([k, -k, 0.0], dtype=torch.float64)
        dists.append(frechet_distance(a, a + shift))
        assert dists[-1] == pytest.approx(2 * k * k, rel=1e-6)
    assert dists[0] < dists[1] < dists[2]


def test_fid_runs_the_extractor_in_batches():
    calls = []

    def extractor(x):
        calls.append(len(x))
        return x.mean(dim=(2, 3))  # [N, 3]

    imgs = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    f = features(extractor, imgs, batch=4)
    assert calls == [4, 4, 2] and f.shape == (10, 3)
    assert torch.allclose(f, imgs.mean(dim=(2, 3)))
    assert fid(extractor, imgs, imgs) == pytest.approx(0.0, abs=1e-8)
    assert fid(extractor, imgs, (imgs + 0.5)) == pytest.approx(0.75, rel=1e-5)


def test_kernel_distance_is_near_zero_for_same_distribution_and_grows_with_shift():
    from genunlearn.metrics.fid import kernel_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 8, generator=g)
    b = torch.randn(400, 8, generator=g)
    same = kernel_distance(a, b, subsets=20, subset_size=200)
    shifted = kernel_distance(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 and shifted > 10 * max(abs(same), 1e-3)
    assert kernel_distance(a, b + 1.0) < kernel_distance(a, b + 2.0)
