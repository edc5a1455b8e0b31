"""Image grids and PNG output for tensors [N, 3, H, W] in [0, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def to_grid(images: torch.Tensor, nrow: int | None = None, scale: int = 1, pad: int = 1):
    """A PIL image tiling ``images`` in rows of ``nrow`` (default: about square)."""
    from PIL import Image

    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad, device="cpu")
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].detach().float().cpu().clamp(0, 1)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 4
) -> Path:
    """Write ``images`` as one PNG grid; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    to_grid(images, nrow, scale).save(p)
    return p
