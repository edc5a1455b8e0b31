"""The light image augmentation shared by the testbed's classifier and CLIP training.

Decoded samples of a latent model are slightly softer than the rendered world; training the
evaluator, toy-clip and the watermark detector on lightly blurred, faintly noisy images makes
them judge generated images as they judge real ones.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur about half of the batch a little and add faint noise.

    Args:
        x: images [N, 3, H, W] in [0, 1].
        g: the generator of every random choice (blur weight, noise level, noise).

    Returns:
        The augmented images, clamped to [0, 1].
    """
    n = x.shape[0]
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    w = torch.rand(n, 1, 1, 1, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.5)
    x = (1 - w) * x + w * blurred
    return (
        x + 0.02 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    ).clamp(0, 1)
