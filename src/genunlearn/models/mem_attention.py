"""MemAttn's inference-time cross-attention processors (Ren et al., ECCV 2024, arXiv 2403.11052).

Installed by :meth:`SDAdapter.sample` for the duration of one sampling loop when the adapter's
inference state holds ``"memattn"`` (set by ``methods/memattn.py``). Every ``attn2`` layer then
computes its attention explicitly (diffusers' reference maths) with two changes to the logits
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

import contextlib
from collections.abc import Iterator

import torch

from genunlearn.types import GenUnlearnError


def prompt_lengths(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Tokens of each padded id row up to and including its first end-of-text token."""
    eos = tokenizer.eos_token_id
    is_eos = ids == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], -1))
    return torch.where(first >= 0, first + 1, torch.full_like(first, ids.shape[1]))


class MemAttnProcessor:
    """Explicit cross-attention with MemAttn's padding mask and conditional BOS scaling.

    Args:
        keep: bool [B, tokens]; False positions get zero attention (None: keep all).
        bos_scale: float [B]; multiplies the BOS logit of each batch row.
        store: if a list, every call appends its probabilities [B, heads, pixels, tokens].
    """

    def __init__(self, keep: torch.Tensor | None, bos_scale: torch.Tensor, store=None):
        self.keep = keep
        self.bos_scale = bos_scale
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):  # fmt: skip
        if encoder_hidden_states is None:
            raise GenUnlearnError("MemAttnProcessor is for cross-attention (attn2) layers only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        batch, n_tok = encoder_hidden_states.shape[:2]
        if batch != len(self.bos_scale):
            raise GenUnlearnError(
                f"MemAttn was set up for a CFG batch of {len(self.bos_scale)} rows, got {batch}"
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # [B * heads, pixels, d]
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        logits = torch.bmm(q, k.transpose(1, 2)) * attn.scale
        logits = logits.view(batch, attn.heads, q.shape[1], n_tok)
        if attention_mask is not None:  # an extra mask from the caller (SD passes none)
            extra = attn.prepare_attention_mask(attention_mask, n_tok, batch)
            logits = logits + extra.view(batch, -1, extra.shape[1], n_tok)
        if self.keep is not None:
            logits = logits.masked_fill(~self.keep.to(logits.device)[:, None, None, :], -torch.inf)
        scale = torch.ones(n_tok, device=logits.device, dtype=logits.dtype).repeat(batch, 1)
        scale[:, 0] = self.bos_scale.to(logits)
        logits = logits * scale[:, None, None, :]
        probs = logits.softmax(-1).to(v.dtype)
        if self.store is not None:
            self.store.append(probs)
        out = torch.bmm(probs.reshape(batch * attn.heads, q.shape[1], n_tok), v)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


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


@contextlib.contextmanager
def memattn_attention(
    model, prompts: list[str], c1: float = 1.25, mask: bool = True, mask_eos: bool = False,
    store: list | None = None,
) -> Iterator[None]:  # fmt: skip
    """Install MemAttn processors on every ``attn2`` layer; put the same processors back on exit.

    Args:
        model: the adapter.
        prompts: conditional prompt of each conditional row of the CFG batches run inside.
        c1, mask, mask_eos: see :func:`memattn_plan`.
        store: optional list receiving every layer call's probabilities.
    """
    keep, bos = memattn_plan(model, prompts, c1, mask, mask_eos)
    mods = model.cross_attention_layers()
    saved = {n: m.processor for n, m in mods.items()}
    try:
        for m in mods.values():
            m.set_processor(MemAttnProcessor(keep, bos, store))
        yield
    finally:
        for n, m in mods.items():
            m.set_processor(saved[n])
