"""MemAttn's inference-time cross-attention processors (Ren et al., ECCV 2024, arXiv 2403.11052).

Installed by :meth:`SDAdapter.sample` for the duration of one sampling loop when the adapter's
inference state holds ``"memattn"`` (set by ``methods/memattn.py``). Every ``attn2`` layer then
computes its attention explicitly (``models.attention_processor``, diffusers' reference maths)
with two changes to the logits
``S = Q K^T / sqrt(d)`` before the softmax:

1. **mask**: logits of text positions at or beyond the conditional prompt's length (BOS + prompt
   tokens + EOS; padding never) are set to -inf, so those positions get exactly zero attention.
   As in the official processor, the unconditional half of the CFG batch gets the same mask as
   its conditional partner (it is derived from the conditional prompt's length).
2. **BOS re-weighting**: the logit of the first (BOS) token is multiplied by ``c1`` in the
   conditional half of the batch only; the unconditional branch keeps its logits.

The sampler lays the CFG batch out as ``[unconditional rows; conditional rows]`` (as diffusers'
pipelines do), so row ``i`` of the first half pairs with row ``i`` of the second half.
"""

from __future__ import annotations

import torch

from genunlearn.models.attention_processor import (
    AttentionStore,
    CrossAttentionProcessor,
    installed_processors,
)
from genunlearn.types import GenUnlearnError


def prompt_lengths(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Tokens of each padded id row up to and including its first end-of-text token."""
    eos = tokenizer.eos_token_id
    is_eos = ids == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], -1))
    return torch.where(first >= 0, first + 1, torch.full_like(first, ids.shape[1]))


def memattn_logit_edit(keep: torch.Tensor | None, bos_scale: torch.Tensor):
    """The pre-softmax edit of MemAttn for :func:`core.attention.patched_cross_attention`.

    Args:
        keep: bool [B, tokens]; False positions get zero attention (None: keep all).
        bos_scale: float [B]; multiplies the BOS logit of each batch row.

    Returns:
        ``logits [B, heads, pixels, tokens] -> logits``.
    """

    def edit(logits: torch.Tensor) -> torch.Tensor:
        batch, n_tok = logits.shape[0], logits.shape[-1]
        if batch != len(bos_scale):
            raise GenUnlearnError(
                f"MemAttn was set up for a CFG batch of {len(bos_scale)} rows, got {batch}"
            )
        if keep is not None:
            logits = logits.masked_fill(~keep.to(logits.device)[:, None, None, :], -torch.inf)
        scale = torch.ones(batch, n_tok, device=logits.device, dtype=logits.dtype)
        scale[:, 0] = bos_scale.to(logits)
        return logits * scale[:, None, None, :]

    return edit


def memattn_plan(model, prompts: list[str], c1: float, mask: bool, mask_eos: bool):
    """The (keep, bos_scale) of a CFG batch ``[uncond rows; cond rows]`` for ``prompts``.

    Args:
        model: the adapter (its tokenizer).
        prompts: the conditional prompt of each row of the conditional half.
        c1: BOS logit factor for the conditional half.
        mask: mask the text positions beyond the prompt length.
        mask_eos: also mask the end-of-text token (the official ``--mask_length_minis1``).
    """
    ids = model.tokenize(list(prompts))
    n, n_tok = ids.shape
    keep = None
    if mask:
        length = prompt_lengths(model.tokenizer, ids)
        if mask_eos:
            length = (length - 1).clamp(min=1)
        keep = torch.arange(n_tok)[None, :] < length[:, None]
        keep = torch.cat([keep, keep])  # the unconditional half uses its partner's length
    bos = torch.cat([torch.ones(n), torch.full((n,), float(c1))])
    return keep, bos


def memattn_attention(
    model, prompts: list[str], c1: float = 1.25, mask: bool = True, mask_eos: bool = False,
    store: AttentionStore | None = None,
):  # fmt: skip
    """Context manager: MemAttn on every ``attn2`` layer; the same processors are back on exit.

    Args:
        model: the adapter.
        prompts: conditional prompt of each conditional row of the CFG batches run inside.
        c1, mask, mask_eos: see :func:`memattn_plan`.
        store: optional :class:`AttentionStore` receiving every layer call's probabilities.
    """
    keep, bos = memattn_plan(model, prompts, c1, mask, mask_eos)
    edit = memattn_logit_edit(keep, bos)
    make = lambda n: CrossAttentionProcessor(n, store, logit_edit=edit)  # noqa: E731
    return installed_processors(model.cross_attention_layers(), make)
