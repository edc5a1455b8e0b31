"""Fréchet distance (FID, Heusel et al., https://arxiv.org/abs/1706.08500) and kernel distance
(KID, Binkowski et al., https://arxiv.org/abs/1801.01401) between feature distributions.

The distance code takes features from *any* extractor: on toy worlds the evaluator's pooled
features (a feature-space FID for that world); a user with local Inception-v3 weights passes that
network's 2048-d pool features and gets the standard FID from the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = f.double()
    mu = f.mean(0)
    x = f - mu
    return mu, x.T @ x / max(1, len(f) - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two feature sets [N, D].

    Non-finite features give NaN (reported as such), never a linear-algebra error or a number.
    """
    if not (torch.isfinite(feats_a).all() and torch.isfinite(feats_b).all()):
        return float("nan")
    mu_a, s_a = _stats(feats_a)
    mu_b, s_b = _stats(feats_b)
    ra = _sqrt_psd(s_a)
    cross = torch.linalg.eigvalsh(ra @ s_b @ ra).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


def kernel_distance(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    subsets: int = 10,
    subset_size: int = 100,
    seed: int = 0,
) -> float:
    """KID: unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over subsets.

    Unlike FID it is unbiased at small sample sizes, which suits toy-world evaluations.
    """
    a, b = feats_a.double(), feats_b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g, device="cpu")[:m]]
        y = b[torch.randperm(len(b), generator=g, device="cpu")[:m]].to(x.device)
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = 1 - torch.eye(m, dtype=torch.float64, device=x.device)
        total += float(
            (kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1)) - 2 * kxy.mean()
        )
    return total / subsets


@torch.no_grad()
def features(
    extractor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int = 256
) -> torch.Tensor:
    """Run ``extractor`` over images [N, 3, H, W] in [0, 1] in batches; returns [N, D]."""
    return torch.cat(
        [extractor(images[i : i + batch]).flatten(1) for i in range(0, len(images), batch)]
    )


def fid(extractor, generated: torch.Tensor, real: torch.Tensor) -> float:
    """FID between generated and real images under ``extractor``."""
    return frechet_distance(features(extractor, generated), features(extractor, real))
