"""Parameter selectors: which weights a method trains or edits, by name.

Names are the adapter's ``component.parameter`` names (``unet.down_blocks.1....attn2.to_k.weight``).
Selectors:

- ``xattn``: every UNet cross-attention parameter (``attn2``) — ESD-x.
- ``noxattn``: every UNet parameter outside cross-attention — ESD-u (as in the diffusers rewrite
  of ESD, time-embedding layers included).
- ``kv``: only ``attn2.to_k`` / ``attn2.to_v`` — Concept Ablation's default, UCE's edit set.
- ``attn1``: UNet self-attention only — SafeGen.
- ``full``: the whole UNet.
- ``text_encoder``: the whole text encoder.
- ``re:<pattern>``: a regular expression over the full names.
"""

from __future__ import annotations

import re

import torch

from genunlearn.registry import unknown_name_message
from genunlearn.types import GenUnlearnError

SELECTORS = {
    "xattn": r"^unet\..*\.attn2\.",
    "noxattn": r"^unet\.(?!.*\.attn2\.)",
    "kv": r"^unet\..*\.attn2\.to_[kv]\.",
    "attn1": r"^unet\..*\.attn1\.",
    "full": r"^unet\.",
    "text_encoder": r"^text_encoder\.",
}


def selector_pattern(selector: str) -> re.Pattern:
    """The compiled regular expression of a selector name or ``re:<pattern>``."""
    if selector.startswith("re:"):
        try:
            return re.compile(selector[3:])
        except re.error as e:
            raise GenUnlearnError(f"bad parameter regex {selector[3:]!r}: {e}") from None
    if selector not in SELECTORS:
        raise GenUnlearnError(
            unknown_name_message("parameter selector", selector, sorted(SELECTORS)) + ", re:<regex>"
        )
    return re.compile(SELECTORS[selector])


def select_parameters(model, selector: str) -> dict[str, torch.nn.Parameter]:
    """The model's parameters matched by ``selector`` (an error if none match)."""
    pat = selector_pattern(selector)
    out = {n: p for n, p in model.named_parameters() if pat.search(n)}
    if not out:
        raise GenUnlearnError(f"parameter selector {selector!r} matches no parameter of the model")
    return out


def own_storage(params, dtype: torch.dtype | None = None) -> None:
    """Give each parameter storage of its own (a copy, in ``dtype`` if given) before it is
    written in place, so that model copies sharing the old storage (``SDAdapter.copy`` /
    ``frozen_copy``) keep their values."""
    for p in params:
        p.data = p.detach().to(dtype or p.dtype, copy=True)


def trainable(model, selector: str) -> dict[str, torch.nn.Parameter]:
    """Select parameters and switch gradients on for exactly those (off everywhere else).

    The chosen parameters get storage of their own (:func:`own_storage`), in float32: trained weights,
    their gradients and optimiser state stay float32 when the model's frozen weights are half
    precision (the adapter's forwards run under autocast).
    """
    chosen = select_parameters(model, selector)
    own_storage(chosen.values(), torch.float32)
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen)
    return chosen
