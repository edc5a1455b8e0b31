"""The explicit cross-attention processor that attention-based methods install on ``attn2`` layers.

A re-implementation of diffusers' reference ``AttnProcessor`` maths with three optional hooks:
recording (probabilities, keys, values into an :class:`AttentionStore`), an additive K/V term
(``kv_delta``) and an edit of the pre-softmax logits (``logit_edit``). It lives in ``models/``
because it is model internals: ``core.attention`` (training-time patches) and methods'
inference-time sampling wrappers both install it through
:func:`installed_processors`, which puts the very same processor objects back on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


class AttentionStore:
    """What patched processors record during forward passes, by layer name.

    Attributes:
        probs: layer -> list of attention probabilities [B, heads, pixels, tokens], one per call.
        keys / values: layer -> list of K / V [B, tokens, dim] (only when ``keep_kv``).
    """

    def __init__(self, keep_probs: bool = True, keep_kv: bool = False):
        self.keep_probs = keep_probs
        self.keep_kv = keep_kv
        self.probs: dict[str, list[torch.Tensor]] = {}
        self.keys: dict[str, list[torch.Tensor]] = {}
        self.values: dict[str, list[torch.Tensor]] = {}

    def clear(self) -> None:
        """Forget everything recorded so far (call between training steps)."""
        self.probs.clear()
        self.keys.clear()
        self.values.clear()

    def all_probs(self) -> list[torch.Tensor]:
        """Every recorded probability tensor, in layer then call order."""
        return [p for v in self.probs.values() for p in v]


class CrossAttentionProcessor:
    """Explicit cross-attention (diffusers' ``AttnProcessor`` maths) with capture and K/V terms.

    Args:
        name: the layer's module name (key of the store).
        store: where probabilities / K / V go (None: record nothing).
        kv_delta: ``c -> (dK, dV)`` added to the projections of the text states (None entries
            are skipped).
        logit_edit: ``logits -> logits`` applied to the pre-softmax scores ``Q K^T * scale``
            (plus any attention mask), shaped ``[B, heads, pixels, tokens]`` (inference-time
            attention edits such as masking text positions or re-weighting a token).
    """

    def __init__(
        self, name: str, store: AttentionStore | None = None, kv_delta=None, logit_edit=None
    ):
        self.name = name
        self.store = store
        self.kv_delta = kv_delta
        self.logit_edit = logit_edit

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):  # fmt: skip
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        if self.kv_delta is not None:
            dk, dv = self.kv_delta(context)
            key = key if dk is None else key + dk
            value = value if dv is None else value + dv
        store = self.store
        if store is not None and store.keep_kv:
            store.keys.setdefault(self.name, []).append(key)
            store.values.setdefault(self.name, []).append(value)
        q, k, v = (attn.head_to_batch_dim(x) for x in (query, key, value))
        if self.logit_edit is None:
            probs = attn.get_attention_scores(q, k, attention_mask)  # [B * heads, pixels, tokens]
        else:
            logits = torch.bmm(q, k.transpose(1, 2)) * attn.scale
            if attention_mask is not None:
                logits = logits + attention_mask
            logits = self.logit_edit(logits.view(batch, attn.heads, *logits.shape[1:]))
            probs = logits.reshape(batch * attn.heads, *logits.shape[2:]).softmax(-1).to(v.dtype)
        if store is not None and store.keep_probs:
            store.probs.setdefault(self.name, []).append(
                probs.view(batch, attn.heads, probs.shape[1], probs.shape[2])
            )
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def installed_processors(
    modules: dict[str, torch.nn.Module], make: Callable[[str], object]
) -> Iterator[None]:
    """Give every module of ``modules`` (name -> ``Attention``) the processor ``make(name)``;
    restore the original processor objects on exit, even after an exception."""
    saved = {n: m.processor for n, m in modules.items()}
    try:
        for n, m in modules.items():
            m.set_processor(make(n))
        yield
    finally:
        for n, m in modules.items():
            m.set_processor(saved[n])  # the very same objects: nothing else changes
