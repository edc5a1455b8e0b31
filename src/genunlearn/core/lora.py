"""Low-rank K/V adapters on cross-attention, trained through ``core.attention`` and merged in
closed form (MACE's per-concept LoRAs).

A LoRA of rank r on a projection W adds ``B A c`` to its output (A [r, in], B [out, r]); B starts at
zero so training starts from the unchanged model, and A is drawn with std 1/r as diffusers'
``LoRALinearLayer`` does. The adapter never touches the module's weights: it enters as the
``kv_delta`` of :func:`core.attention.patched_cross_attention`, and :meth:`KVLoRA.deltas` returns the
dense ``B A`` per projection for a closed-form merge. (peft is not needed for this: fusion only
needs the product.)
"""

from __future__ import annotations

import torch

from genunlearn.types import GenUnlearnError


class KVLoRA:
    """Rank-``rank`` adapters on ``to_k`` and ``to_v`` of every cross-attention layer.

    Args:
        model: the adapter (its ``cross_attention_layers``).
        rank: r, between 1 and the smallest projection dimension.
        generator: draws the A matrices.
    """

    def __init__(self, model, rank: int, generator: torch.Generator):
        layers = model.cross_attention_layers()
        limit = min(min(m.to_k.weight.shape) for m in layers.values())
        if not 1 <= rank <= limit:
            raise GenUnlearnError(f"LoRA rank must be in [1, {limit}] for this model, got {rank}")
        self.factors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        for name, layer in layers.items():
            for proj in ("to_k", "to_v"):
                w = getattr(layer, proj).weight
                # drawn on the CPU generator, then moved: the same start on every device
                a = torch.randn(rank, w.shape[1], generator=generator, device="cpu") / rank
                a, b = a.to(w.device), torch.zeros(w.shape[0], rank, device=w.device)
                self.factors[(name, proj)] = (a.requires_grad_(), b.requires_grad_())

    def parameters(self) -> list[torch.Tensor]:
        """The trainable A and B matrices."""
        return [x for ab in self.factors.values() for x in ab]

    def kv_delta(self) -> dict:
        """Layer name -> ``c -> (B_k A_k c, B_v A_v c)`` for ``patched_cross_attention``."""
        f = self.factors

        def term(name):
            return lambda c: tuple(
                c @ f[(name, p)][0].T @ f[(name, p)][1].T for p in ("to_k", "to_v")
            )

        return {name: term(name) for name, _ in f}

    def deltas(self) -> dict[tuple[str, str], torch.Tensor]:
        """(layer, "to_k"|"to_v") -> the dense weight change B A (no gradient)."""
        return {key: (b @ a).detach() for key, (a, b) in self.factors.items()}
