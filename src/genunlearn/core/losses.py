"""Loss targets shared by fine-tuning methods."""

from __future__ import annotations

import torch


def negative_guidance_target(
    e_cond: torch.Tensor, e_uncond: torch.Tensor, eta: float
) -> torch.Tensor:
    """ESD's target: the unconditional prediction pushed *away* from the concept by ``eta``.

    ``e_uncond - eta * (e_cond - e_uncond)`` (ESD's ``erase_from`` builds its own target from
    this difference: see ``methods/esd.py``).
    """
    return e_uncond - eta * (e_cond - e_uncond)
