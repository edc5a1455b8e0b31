"""Image grids: size arithmetic, tile placement, padding, clamping and scaling."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genunlearn.core.images import save_grid, to_grid


def _tiles(n, h=4, w=6):
    """Tile i is a solid grey of value (i + 1) / (n + 2) so every tile is distinguishable."""
    v = torch.arange(1, n + 1, dtype=torch.float32) / (n + 2)
    return v[:, None, None, None].expand(n, 3, h, w).clone()


def test_grid_size_arithmetic():
    img = to_grid(_tiles(5), nrow=2, pad=1)
    # 2 columns, 3 rows: width 2 * (6 + 1) + 1, height 3 * (4 + 1) + 1.
    assert img.size == (15, 16)
    img = to_grid(_tiles(5), pad=2)  # default nrow = ceil(sqrt(5)) = 3 -> 2 rows
    assert img.size == (3 * 8 + 2, 2 * 6 + 2)
    assert to_grid(_tiles(1)).size == (8, 6)


def test_tiles_land_in_row_major_order_with_white_padding():
    n, h, w, pad, nrow = 5, 4, 6, 1, 2
    tiles = _tiles(n, h, w)
    arr = np.asarray(to_grid(tiles, nrow=nrow, pad=pad))
    covered = np.zeros(arr.shape[:2], dtype=bool)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        want = round(float(tiles[i, 0, 0, 0]) * 255)
        assert (arr[y : y + h, x : x + w] == want).all(), i
        covered[y : y + h, x : x + w] = True
    assert (arr[~covered] == 255).all()  # padding and the empty sixth cell are white


def test_values_are_clamped_to_unit_range():
    x = torch.tensor([-1.0, 0.5, 2.0])[:, None, None, None].expand(3, 3, 2, 2).clone()
    arr = np.asarray(to_grid(x, nrow=3, pad=0))
    assert arr.shape == (2, 6, 3)
    assert (arr[:, 0:2] == 0).all() and (arr[:, 2:4] == 128).all() and (arr[:, 4:6] == 255).all()


def test_channels_are_not_mixed_up():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0  # pure red
    arr = np.asarray(to_grid(x, pad=0))
    assert (arr[..., 0] == 255).all() and (arr[..., 1:] == 0).all()


def test_scale_repeats_pixels():
    base = np.asarray(to_grid(_tiles(3), nrow=3))
    big = np.asarray(to_grid(_tiles(3), nrow=3, scale=3))
    assert big.shape == (base.shape[0] * 3, base.shape[1] * 3, 3)
    assert np.array_equal(big, base.repeat(3, axis=0).repeat(3, axis=1))


def test_save_grid_writes_the_same_png(tmp_path):
    p = save_grid(_tiles(4), tmp_path / "a" / "grid.png", nrow=2, scale=2)
    assert p.is_file()
    with Image.open(p) as im:
        assert np.array_equal(np.asarray(im), np.asarray(to_grid(_tiles(4), nrow=2, scale=2)))
