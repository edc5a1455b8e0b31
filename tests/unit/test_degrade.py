"""core.degrade: mosaic keeps block means, blur keeps the mean and smooths, a scramble is a
permutation of patches (same multiset, other positions) and is reproducible from the generator."""

from __future__ import annotations

import pytest
import torch

from genunlearn.core import degrade
from genunlearn.types import GenUnlearnError


def _images(n=3, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_mosaic_is_blockwise_mean():
    x = _images()
    y = degrade.mosaic(x, 8)
    assert y.shape == x.shape
    blocks = y.reshape(3, 3, 4, 8, 4, 8)
    # constant inside each block, equal to the block's mean in the input
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    want = x.reshape(3, 3, 4, 8, 4, 8).mean(dim=(3, 5))
    assert torch.allclose(blocks[:, :, :, 0, :, 0], want, atol=1e-6)
    assert torch.equal(degrade.mosaic(x, 1), x)


def test_mosaic_rejects_block_not_dividing_size():
    with pytest.raises(GenUnlearnError, match="divide the image size 32x32"):
        degrade.mosaic(_images(), 5)


def test_blur_keeps_constant_images_and_smooths_noise():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(degrade.blur(flat, 1.5), flat, atol=1e-6)
    x = _images(1)
    y = degrade.blur(x, 1.5)
    assert y.shape == x.shape
    assert y.var() < 0.5 * x.var()
    assert abs(float(y.mean() - x.mean())) < 0.02
    assert torch.equal(degrade.blur(x, 0), x)


def _sorted_patches(images, grid):
    p = degrade.patches(images, grid).flatten(2)  # [N, K, D]
    # order patches by their full content so that two multisets compare equal
    keys = [sorted(range(p.shape[1]), key=lambda i, r=r: p[r, i].tolist()) for r in range(len(p))]
    return torch.stack([p[r, keys[r]] for r in range(len(p))])


@pytest.mark.parametrize("grid", [2, 4, 8])
def test_scramble_is_a_permutation_of_patches(grid):
    x = _images()
    y, perm = degrade.scramble_grid(x, grid, torch.Generator().manual_seed(1), return_perm=True)
    assert y.shape == x.shape
    # the same multiset of patches ...
    assert torch.equal(_sorted_patches(x, grid), _sorted_patches(y, grid))
    # ... at other positions (never the identity), and exactly where the permutation says
    assert not any(torch.equal(x[i], y[i]) for i in range(len(x)))
    px, py = degrade.patches(x, grid), degrade.patches(y, grid)
    for i in range(len(x)):
        assert torch.equal(py[i], px[i, perm[i]])


def test_scramble_is_deterministic_given_the_generator():
    x = _images()
    a = degrade.scramble_grid(x, 4, torch.Generator().manual_seed(7))
    b = degrade.scramble_grid(x, 4, torch.Generator().manual_seed(7))
    c = degrade.scramble_grid(x, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_patches_round_trip():
    x = _images()
    assert torch.equal(degrade.unpatch(degrade.patches(x, 4), 4), x)


def test_degrade_dispatch_and_errors():
    x = _images(1)
    assert torch.equal(degrade.degrade(x, "mosaic", 4), degrade.mosaic(x, 4))
    g = torch.Generator().manual_seed(0)
    assert degrade.degrade(x, "scramble", 4, g).shape == x.shape
    with pytest.raises(GenUnlearnError, match="needs a torch.Generator"):
        degrade.degrade(x, "scramble", 4)
    with pytest.raises(GenUnlearnError, match="Did you mean 'mosaic'"):
        degrade.degrade(x, "mosiac", 4)
    with pytest.raises(GenUnlearnError, match=">= 2"):
        degrade.scramble_grid(x, 1, g)
