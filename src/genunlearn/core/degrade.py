"""Image degradations used as training targets by erasure methods.

SafeGen maps a concept's images to a *mosaic* (pixelated) version of themselves; Degeneration-
Tuning maps them to a *scrambled grid* (the image cut into a grid of patches whose positions are
shuffled). Both destroy the concept's semantics while keeping the image statistics (colours,
local texture) that the rest of the model relies on. A Gaussian *blur* is offered as a milder
alternative. Every function takes and returns float images [N, C, H, W]; randomness comes only
from an explicit ``torch.Generator``, so the same generator state gives the same output.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from genunlearn.registry import unknown_name_message
from genunlearn.types import GenUnlearnError


def _check(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise GenUnlearnError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")


def mosaic(images: torch.Tensor, block: int) -> torch.Tensor:
    """Pixelate: every ``block`` x ``block`` cell becomes its mean colour.

    Args:
        images: [N, C, H, W] with H and W multiples of ``block``.
        block: cell size in pixels (1 returns the images unchanged).
    """
    _check(images)
    h, w = images.shape[-2:]
    if block < 1 or h % block or w % block:
        raise GenUnlearnError(
            f"mosaic block must be >= 1 and divide the image size {h}x{w}, got {block}"
        )
    small = F.avg_pool2d(images, block)
    return small.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (``sigma`` in pixels; 0 = unchanged)."""
    _check(images)
    if sigma < 0:
        raise GenUnlearnError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images.clone()
    radius = max(1, min(int(3 * sigma + 0.5), min(images.shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def patches(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut images into a ``grid`` x ``grid`` array of patches: [N, grid*grid, C, H/grid, W/grid]
    in row-major order."""
    _check(images)
    n, c, h, w = images.shape
    if grid < 1 or h % grid or w % grid:
        raise GenUnlearnError(
            f"scramble grid must be >= 1 and divide the image size {h}x{w}, got {grid}"
        )
    ph, pw = h // grid, w // grid
    p = images.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(n, grid * grid, c, ph, pw)


def unpatch(p: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`patches`."""
    n, _, c, ph, pw = p.shape
    return p.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(
        n, c, grid * ph, grid * pw
    )  # fmt: skip


def scramble_grid(
    images: torch.Tensor, grid: int, generator: torch.Generator, return_perm: bool = False
):
    """Degeneration-Tuning's "scrambled grid": shuffle a ``grid`` x ``grid`` array of patches.

    Each image gets its own random permutation of patch positions, never the identity (it is
    redrawn), so every output is really scrambled while holding exactly the same patches.

    Args:
        images: [N, C, H, W] with H and W multiples of ``grid``.
        grid: patches per side (>= 2).
        generator: source of the permutations.
        return_perm: also return the permutations [N, grid*grid] (output patch i = input
            patch perm[i]).
    """
    if grid < 2:
        raise GenUnlearnError(f"scramble grid must be >= 2 (1 cannot scramble), got {grid}")
    p = patches(images, grid)
    k = grid * grid
    ident = torch.arange(k, device="cpu")  # permutations are drawn on the generator's CPU
    perms = []
    for _ in range(len(images)):
        perm = torch.randperm(k, generator=generator, device="cpu")
        while torch.equal(perm, ident):
            perm = torch.randperm(k, generator=generator, device="cpu")
        perms.append(perm)
    perm = torch.stack(perms) if perms else torch.zeros(0, k, dtype=torch.long, device="cpu")
    out = unpatch(torch.stack([p[i, perm[i]] for i in range(len(images))]) if perms else p, grid)
    return (out, perm) if return_perm else out


DEGRADATIONS = ("mosaic", "blur", "scramble")


def degrade(
    images: torch.Tensor, kind: str, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply one named degradation: ``mosaic`` (strength = block size), ``blur`` (sigma) or
    ``scramble`` (grid size; needs ``generator``)."""
    if kind == "mosaic":
        return mosaic(images, int(strength))
    if kind == "blur":
        return blur(images, float(strength))
    if kind == "scramble":
        if generator is None:
            raise GenUnlearnError("degradation 'scramble' needs a torch.Generator")
        return scramble_grid(images, int(strength), generator)
    raise GenUnlearnError(unknown_name_message("degradation", kind, list(DEGRADATIONS)))
