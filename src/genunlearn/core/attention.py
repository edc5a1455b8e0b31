"""Cross-attention hooks: patch the UNet's ``attn2`` processors, capture, restore exactly.

Attention-based erasure methods (Forget-Me-Not, MACE's LoRA stage, SepME's K/V shifts) need three
things from every cross-attention layer that diffusers' fused processors do not expose:

- the attention **probabilities** ``softmax(Q K^T * scale)`` per head, query pixel and text token,
  with gradients (FMN and MACE minimise their mass on the concept tokens);
- the **keys and values** a prompt produces (closed-form edits read them);
- an **additive K/V term** ``K = to_k(c) + dK(c)``, ``V = to_v(c) + dV(c)`` that trains without
  touching the base weights (MACE's rank-1 LoRAs, SepME's null-space shifts).

:func:`patched_cross_attention` swaps in :class:`CrossAttentionProcessor` (an explicit
re-implementation of diffusers' reference ``AttnProcessor``) on the chosen ``attn2`` modules and
puts the *same processor objects* back on exit, so a model leaves the block exactly as it entered.
Probabilities are stored as ``[B, heads, pixels, tokens]`` (they sum to 1 over tokens).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch.nn import functional as F

from genunlearn.models.attention_processor import (  # noqa: F401 (AttentionStore: re-export)
    AttentionStore,
    CrossAttentionProcessor,
    installed_processors,
)
from genunlearn.types import GenUnlearnError

KVDelta = Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor | None]]


def cross_attention_modules(model, layers: list[str] | None = None) -> dict[str, torch.nn.Module]:
    """The model's ``attn2`` modules by name (all, or the named ``layers``)."""
    mods = model.cross_attention_layers()
    if layers is None:
        return mods
    unknown = [n for n in layers if n not in mods]
    if unknown:
        raise GenUnlearnError(
            f"unknown cross-attention layer(s) {unknown}; the model has: {', '.join(mods)}"
        )
    return {n: mods[n] for n in layers}


@contextlib.contextmanager
def patched_cross_attention(
    model,
    store: AttentionStore | None = None,
    kv_delta: dict[str, KVDelta] | None = None,
    layers: list[str] | None = None,
    logit_edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[AttentionStore | None]:
    """Run a block with explicit, recording cross-attention processors; restore them on exit.

    Args:
        model: the adapter.
        store: receives probabilities (and K/V); None records nothing.
        kv_delta: layer name -> ``c -> (dK, dV)`` added to that layer's keys / values.
        layers: patch only these ``attn2`` layers (None: all).
        logit_edit: edit of every patched layer's pre-softmax logits (see
            :class:`CrossAttentionProcessor`).

    Yields:
        The store.
    """
    mods = cross_attention_modules(model, layers)
    kv_delta = kv_delta or {}
    unknown = set(kv_delta) - set(mods)
    if unknown:
        raise GenUnlearnError(f"kv_delta names layers that are not patched: {sorted(unknown)}")
    make = lambda n: CrossAttentionProcessor(n, store, kv_delta.get(n), logit_edit)  # noqa: E731
    with installed_processors(mods, make):
        yield store


def attention_probs(
    model, x_t, t, cond, layers: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """One denoiser call; returns each layer's attention probabilities [B, heads, pixels, tokens]."""
    store = AttentionStore()
    with patched_cross_attention(model, store, layers=layers):
        model.predict_noise(x_t, t, cond)
    return {n: v[0] for n, v in store.probs.items()}


def token_positions(model, prompt: str, phrase: str, include_eot: bool = False) -> list[int]:
    """Token indices of ``phrase`` inside ``prompt`` (exact token-subsequence match, as in FMN).

    Args:
        model: the adapter (its tokenizer).
        prompt: the full prompt.
        phrase: the concept words to find.
        include_eot: also return the first end-of-text token (FMN/MACE's ``use_pooler``).

    Raises:
        GenUnlearnError: the phrase does not occur in the prompt's tokens.
    """
    ids = model.tokenize([prompt])[0].tolist()
    tok = model.tokenizer
    sub = [i for i in tok(phrase).input_ids if i not in (tok.bos_token_id, tok.eos_token_id)]
    hits = [s for s in range(len(ids) - len(sub) + 1) if sub and ids[s : s + len(sub)] == sub]
    if not hits:
        raise GenUnlearnError(f"{phrase!r} does not occur in the tokens of prompt {prompt!r}")
    pos = list(range(hits[0], hits[0] + len(sub)))
    if include_eot and tok.eos_token_id in ids:
        pos.append(ids.index(tok.eos_token_id))
    return pos


def position_mask(model, prompts: list[str], phrases: list[str], include_eot=False) -> torch.Tensor:
    """Boolean [B, tokens] marking each prompt's concept tokens (see :func:`token_positions`)."""
    n_tok = model.tokenize([""]).shape[1]
    mask = torch.zeros(len(prompts), n_tok, dtype=torch.bool, device=model.device)
    for i, (p, ph) in enumerate(zip(prompts, phrases, strict=True)):
        mask[i, token_positions(model, p, ph, include_eot)] = True
    return mask


def concept_attention_loss(
    probs: list[torch.Tensor], positions: torch.Tensor, region: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over layers of the Frobenius norm of the attention paid to the concept tokens.

    This is Forget-Me-Not's loss; with ``region`` it is MACE's (only query pixels inside the
    concept's region count).

    Args:
        probs: attention probabilities [B, heads, pixels, tokens] per layer call.
        positions: boolean [B, tokens], the concept tokens of each batch row.
        region: [B, H, W] in [0, 1] (the concept's mask at any resolution) or None (all pixels).
    """
    total = probs[0].new_zeros(())
    tok = positions.to(probs[0].device, probs[0].dtype)[:, None, None, :]
    for p in probs:
        sel = p * tok
        if region is not None:
            side = math.isqrt(p.shape[2])
            if side * side != p.shape[2]:
                raise GenUnlearnError(f"region masks need square attention maps, got {p.shape[2]}")
            small = F.interpolate(
                region[:, None].to(p.device).float(), size=(side, side), mode="area"
            )
            sel = sel * (small.flatten(1) >= 0.5).to(p.dtype)[:, None, :, None]
        total = total + sel.norm()
    return total


@torch.no_grad()
def attention_regions(model, z0, cond, positions, size: tuple[int, int]) -> torch.Tensor:
    """Where the model looks at the concept: a 0/1 mask [N, H, W] per image.

    The attention paid to the ``positions`` tokens at a mid-schedule timestep, averaged over heads
    and layers and upsampled to ``size``, thresholded at its mean over the image (the segmenter
    stand-in for models without a labelled world).
    """
    t = torch.full((len(z0),), model.scheduler.config.num_train_timesteps // 2, device="cpu")
    noise = model.randn(z0.shape, torch.Generator("cpu").manual_seed(0))
    probs = attention_probs(model, model.scheduler.add_noise(z0, noise, t), t, cond)
    maps = []
    for p in probs.values():
        side = math.isqrt(p.shape[2])
        tok = positions.to(p.device, p.dtype)[:, None, None, :]
        m = (p * tok).sum((1, 3)).view(len(z0), 1, side, side)
        maps.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False))
    heat = torch.stack(maps).mean(0)[:, 0]
    return (heat > heat.mean((1, 2), keepdim=True)).float()
