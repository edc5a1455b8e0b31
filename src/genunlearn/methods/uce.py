"""uce: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024).

Paper: https://arxiv.org/abs/2308.14761 — official code: github.com/rohitgandikota/unified-concept-editing.

Idea: training-free. Every cross-attention key and value projection W (``attn2.to_k``,
``attn2.to_v``) is replaced by the closed-form least-squares solution (``core.closed_form``) that
maps the edit concepts' text embeddings c_i to the original projections of their guide concepts,
v_i* = W c_guide, keeps the projections of preserve concepts c_j (W' c_j ~ W c_j), and stays
close to W:

    W' = (lam W + s_e sum v_i* c_i^T + s_p sum (W c_j) c_j^T)(lam I + s_e sum c_i c_i^T + s_p sum c_j c_j^T)^-1

Modes: ``erase`` maps each target to its guide (``task.anchor``, else ``guide``, else the empty
prompt, the 2025 code's default); ``moderate`` maps every target to the empty prompt. The
``debias`` mode of the paper (an iterative generate-classify-adjust loop over attribute mixes) is
not implemented yet and raises a clear error.

Embeddings (``token_mode``): ``last_to_end`` (2023 code) uses the tokens from the target's last
word through the padding, aligned position by position with the guide's tokens from its last word
(the empty guide starts at its end-of-text token); ``last`` (2025 rewrite) uses the last word
token only. Preserve prompts use all their tokens, and "" is always preserved (2023 code).
Preserve set: ``task.retain`` if given, else every other concept of the model's world (none for a
plain checkpoint). Paper defaults: lam 0.5, erase scale 1, preserve scale max(0.1, 1/N).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genunlearn.core.closed_form import least_squares_edit
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError


@dataclass(frozen=True)
class UCEConfig:
    """UCE settings (paper defaults).

    Args:
        mode: "erase" or "moderate" ("debias" is not implemented yet).
        guide: guide prompt when the task has no anchor (None: the empty prompt).
        lam: pull towards the original weights.
        erase_scale: weight of the edit terms.
        preserve_scale: weight of the preserve terms (None: max(0.1, 1 / #preserve prompts)).
        token_mode: "last_to_end" (2023 code) or "last" (2025 code).
    """

    mode: str = "erase"
    guide: str | None = None
    lam: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float | None = None
    token_mode: str = "last_to_end"


def _rows(model, prompts: list[str], mode: str) -> list[torch.Tensor]:
    """Per prompt, the embedding rows used as edit inputs (from the last word token on)."""
    ids = model.tokenize(prompts)
    emb = model.encode_prompt(prompts)
    eos = model.tokenizer.eos_token_id
    out = []
    for i in range(len(prompts)):
        end = int((ids[i] == eos).nonzero()[0])  # first end-of-text token
        start = max(end - 1, 1) if end > 1 else end
        out.append(emb[i, start : start + 1] if mode == "last" else emb[i, start:])
    return out


@register_method(
    "uce",
    config=UCEConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TEXT_ENCODER),
    presets={"paper": {}, "toy": {}, "smoke": {}},
    paper="https://arxiv.org/abs/2308.14761",
    modifies=r"^unet\..*\.attn2\.to_[kv]\.weight$",
)
def erase(model, task, cfg: UCEConfig) -> ErasureResult:
    """Edit every cross-attention K/V projection in closed form."""
    if cfg.mode not in ("erase", "moderate"):
        raise GenUnlearnError(f"uce mode {cfg.mode!r} is not available; use 'erase' or 'moderate'")
    if cfg.token_mode not in ("last_to_end", "last"):
        raise GenUnlearnError("uce token_mode must be 'last_to_end' or 'last'")
    world = getattr(model, "world", None)
    say = lambda t: world.text(t) if world and world.kind_of(t) else t  # noqa: E731
    targets = [say(t) for t in task.targets]
    guide = "" if cfg.mode == "moderate" else say(task.anchor or cfg.guide or "")
    if task.retain is not None:
        keep = [say(r) for r in task.retain]
    elif world is not None:
        keep = [say(c.name) for c in world.concepts() if c.name not in task.targets]
    else:
        keep = []
    keep = [k for k in dict.fromkeys(keep + [""]) if k not in targets]
    s_p = cfg.preserve_scale if cfg.preserve_scale is not None else max(0.1, 1 / len(keep))
    with torch.no_grad():
        t_rows = _rows(model, targets, cfg.token_mode)
        g_rows = _rows(model, [guide] * len(targets), cfg.token_mode)
        c_e, c_g = [], []
        for tr, gr in zip(t_rows, g_rows, strict=True):
            n = min(len(tr), len(gr))
            c_e.append(tr[:n])
            c_g.append(gr[:n])
        c_e, c_g = torch.cat(c_e), torch.cat(c_g)
        c_p = model.encode_prompt(keep).flatten(0, 1)
        edited = 0
        for layer in model.cross_attention_layers().values():
            for proj in (layer.to_k, layer.to_v):
                w = proj.weight
                w.copy_(least_squares_edit(w, c_e, c_g @ w.T, c_p, cfg.lam, cfg.erase_scale, s_p))
                edited += 1
    return ErasureResult(
        info={
            "targets": targets,
            "guide": guide,
            "n_preserve": len(keep),
            "edited_projections": edited,
        }
    )
