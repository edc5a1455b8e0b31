"""uce: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024).

Paper: Rohit Gandikota, Hadas Orgad, Yonatan Belinkov, Joanna Materzyńska, David Bau.
https://arxiv.org/abs/2308.14761 — official code: github.com/rohitgandikota/unified-concept-editing.

Idea: training-free. Every cross-attention key and value projection W (``attn2.to_k``,
``attn2.to_v``) is replaced by the closed-form least-squares solution (``core.closed_form``) that
maps the edit concepts' text embeddings c_i to chosen outputs v_i*, keeps the projections of
preserve concepts c_j (W' c_j ~ W c_j), and stays close to W:

    W' = (lam W + s_e sum v_i* c_i^T + s_p sum (W c_j) c_j^T)(lam I + s_e sum c_i c_i^T + s_p sum c_j c_j^T)^-1

Modes (symbols as in the paper):

- ``erase``: v_i* = W c_guide, the guide being ``task.anchor``, else ``guide``, else the empty
  prompt (the 2025 code's default). ``guide="neighbour"`` picks, for a concept of the model's
  world, the next concept of the same kind (the toy preset: on toy-sd mapping a concept to ""
  leaves objects half drawn, while a concrete same-kind guide erases them; the paper also maps
  concepts to chosen guides). Figures: docs/results.md#uce
- ``moderate``: every target maps to the empty prompt.
- ``debias``: v_i* = W (c_i + sum_k alpha_k a_k) for the attribute embeddings a_k (``attributes``,
  e.g. colours for an object). The alphas start at 0 and are tuned in an outer loop: generate
  ``debias_images`` images of the concept with the edited model, classify each among the
  attributes (the world's evaluator restricted to the attribute labels, as the paper's CLIP
  zero-shot classifier is restricted to the candidate labels), and move alpha_k by
  ``step_size`` * (desired ratio - observed ratio) until every ratio is within ``max_diff``
  (at most ``max_iterations`` rounds; a concept that is already balanced keeps its alphas).
  Each round re-solves the closed form from the original W, so alphas accumulate instead of
  edits compounding (the 2023 code edits the current W with a per-round weight; the 2025 code
  accumulates v* in place with an unused step size). Needs a model with a world evaluator.

Concepts of the model's world are said with the world's in-distribution phrase (``World.prompt``:
"a heart", "a shape in striped style"); free text as given.

Embeddings (``token_mode``): ``last_to_end`` (2023 code) uses the tokens from the concept's last
word through the padding, aligned position by position with the guide's (or attribute's) tokens
from its last word (the empty guide starts at its end-of-text token); ``last`` (2025 rewrite) uses
the last word token only. Preserve prompts use all their tokens, and "" is always preserved (2023
code). Preserve set: ``task.retain`` if given, else every other concept of the model's world (none
for a plain checkpoint). ``templates`` is the 2025 code's ``expand_prompts``: each template filled
with the target is one more edit prompt mapped to the guide. Paper defaults: lam 0.5, erase scale
1, preserve scale max(0.1, 1/N); debias: 30 rounds, max diff 0.05, step 0.1, 10 images, 20 sampler
steps, uniform desired ratios. A guide, attribute or explicit preserve concept that is also a
target is an error (the edit and the preserve term would contradict each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genunlearn.core.closed_form import least_squares_edit
from genunlearn.core.concept_sets import relabel_concept
from genunlearn.core.params import own_storage
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError

MODES = ("erase", "moderate", "debias")


@dataclass(frozen=True)
class UCEConfig:
    """UCE settings (paper defaults).

    Args:
        mode: "erase", "moderate" or "debias".
        guide: guide prompt when the task has no anchor (None: the empty prompt; "neighbour":
            the next concept of the target's kind in the model's world).
        lam: pull towards the original weights.
        erase_scale: weight of the edit terms.
        preserve_scale: weight of the preserve terms (None: max(0.1, 1 / #preserve prompts)).
        token_mode: "last_to_end" (2023 code) or "last" (2025 code).
        templates: expand_prompts: extra edit prompts ``template.format(target)`` that are mapped
            to the guide as well (the 2025 code's templates are "image of {}", "photo of {}", ...).
        attributes: debias: the attribute concepts to balance (e.g. colours).
        ratios: debias: desired share of each attribute (None: uniform); must sum to 1.
        max_iterations: debias: outer rounds at most.
        max_diff: debias: tolerance on every attribute share.
        step_size: debias: alpha change per unit of share error.
        debias_images: debias: images generated per concept and round.
        debias_steps: debias: sampler steps of those images (None: the model's default).
    """

    mode: str = "erase"
    guide: str | None = None
    lam: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float | None = None
    token_mode: str = "last_to_end"
    templates: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    ratios: tuple[float, ...] | None = None
    max_iterations: int = 30
    max_diff: float = 0.05
    step_size: float = 0.1
    debias_images: int = 10
    debias_steps: int | None = 20


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


def _aligned(model, a: list[str], b: list[str], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-aligned edit inputs of prompts ``a`` and ``b`` (pairwise, cut to the shorter span)."""
    ra, rb = _rows(model, a, mode), _rows(model, b, mode)
    n = [min(len(x), len(y)) for x, y in zip(ra, rb, strict=True)]
    return (
        torch.cat([x[:k] for x, k in zip(ra, n, strict=True)]),
        torch.cat([y[:k] for y, k in zip(rb, n, strict=True)]),
    )


def _guide(world, target: str, task, cfg: UCEConfig) -> str:
    """The concept a target's keys/values are mapped to (see the module docstring)."""
    if cfg.mode == "moderate":
        return ""
    if task.anchor:
        return task.anchor
    if cfg.guide != "neighbour":
        return cfg.guide or ""
    if world is None or not world.kind_of(target):
        raise GenUnlearnError(
            f"uce guide='neighbour' needs a concept of the model's world, got {target!r}; give "
            "task.anchor or a guide prompt"
        )
    return relabel_concept(world, target)


def _check(cfg: UCEConfig) -> None:
    if cfg.mode not in MODES:
        raise GenUnlearnError(f"uce mode {cfg.mode!r} is not available; use one of {MODES}")
    if cfg.token_mode not in ("last_to_end", "last"):
        raise GenUnlearnError("uce token_mode must be 'last_to_end' or 'last'")
    bad = [t for t in cfg.templates if "{}" not in t]
    if bad:
        raise GenUnlearnError(f"uce templates need a '{{}}' where the concept goes, got {bad}")
    if cfg.mode != "debias":
        return
    if len(cfg.attributes) < 2:
        raise GenUnlearnError("uce debias needs at least two attributes, e.g. attributes=red,blue")
    if cfg.ratios is not None and (
        len(cfg.ratios) != len(cfg.attributes)
        or any(r < 0 for r in cfg.ratios)
        or abs(sum(cfg.ratios) - 1) > 1e-6
    ):
        raise GenUnlearnError(
            f"uce ratios must be {len(cfg.attributes)} non-negative shares summing to 1 (one per "
            f"attribute), got {cfg.ratios}"
        )
    if not 0 < cfg.max_diff < 1 or cfg.step_size <= 0 or cfg.debias_images < 1:
        raise GenUnlearnError(
            "uce debias needs 0 < max_diff < 1, step_size > 0 and debias_images >= 1"
        )


@register_method(
    "uce",
    config=UCEConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TEXT_ENCODER),
    presets={
        "paper": {},
        "toy": {"guide": "neighbour"},
        "smoke": {"max_iterations": 2, "debias_images": 2, "debias_steps": 2},
    },
    paper="https://arxiv.org/abs/2308.14761",
    modifies=r"^unet\..*\.attn2\.to_[kv]\.weight$",
)
def erase(model, task, cfg: UCEConfig) -> ErasureResult:
    """Edit every cross-attention K/V projection in closed form."""
    _check(cfg)
    world = getattr(model, "world", None)
    say = lambda t: world.prompt(t) if world and world.kind_of(t) else t  # noqa: E731
    targets = [say(t) for t in task.targets]
    guide_names = [_guide(world, t, task, cfg) for t in task.targets]
    if cfg.mode == "erase" and set(guide_names) & set(task.targets):
        raise GenUnlearnError(
            f"uce guide {sorted(set(guide_names) & set(task.targets))} is also a target; choose "
            "a guide concept that is not erased (or none for the empty prompt)"
        )
    guides = [say(g) for g in guide_names]
    attrs = [say(a) for a in cfg.attributes]
    if cfg.mode == "debias" and set(cfg.attributes) & set(task.targets):
        raise GenUnlearnError(
            f"uce attributes {sorted(set(cfg.attributes) & set(task.targets))} are also targets; debias a "
            "concept over attributes other than itself"
        )
    if task.retain is not None:
        keep = [say(r) for r in task.retain]
        clash = sorted(set(task.retain) & set(task.targets))
        if clash:
            raise GenUnlearnError(
                f"uce preserve concepts {clash} are also targets; remove them from retain"
            )
    elif world is not None:
        keep = [say(c.name) for c in world.concepts() if c.name not in task.targets]
    else:
        keep = []
    keep = [k for k in dict.fromkeys(keep + [""]) if k not in targets]
    s_p = cfg.preserve_scale if cfg.preserve_scale is not None else max(0.1, 1 / len(keep))
    layers = [
        p for layer in model.cross_attention_layers().values() for p in (layer.to_k, layer.to_v)
    ]
    # edited in place below, in float32 (also for a half-precision model): copies keep theirs
    own_storage((p.weight for p in layers), torch.float32)
    originals = [p.weight.detach().clone() for p in layers]
    with torch.no_grad():
        c_p = model.encode_prompt(keep).flatten(0, 1)
        if cfg.mode != "debias":
            pairs = [(t, g) for t, g in zip(targets, guides, strict=True)]
            pairs += [(tpl.format(t), g) for t, g in pairs for tpl in cfg.templates]
            c_e, c_g = _aligned(model, *map(list, zip(*pairs, strict=True)), cfg.token_mode)
            for proj, w in zip(layers, originals, strict=True):
                proj.weight.copy_(
                    least_squares_edit(w, c_e, c_g @ w.T, c_p, cfg.lam, cfg.erase_scale, s_p)
                )
            info = {"guides": guides}
        else:
            info = _debias(model, targets, attrs, c_p, s_p, layers, originals, cfg)
    return ErasureResult(
        info={
            "targets": targets,
            "n_preserve": len(keep),
            "edited_projections": len(layers),
            **info,
        }
    )


def _debias(model, targets, attrs, c_p, s_p, layers, originals, cfg: UCEConfig) -> dict:
    """The paper's outer loop: closed-form edit with v* = W(c + sum alpha a), alphas tuned on
    the attribute shares of the edited model's own generations."""
    world = getattr(model, "world", None)
    kinds = {world.kind_of(a) for a in cfg.attributes} if world is not None else {None}
    if None in kinds or len(kinds) != 1:
        raise GenUnlearnError(
            "uce debias classifies generations with the model's world evaluator: the attributes "
            f"must be concepts of one kind of the model's world, got {list(cfg.attributes)}"
        )
    head = kinds.pop()
    labels = model.evaluator.heads_labels[head]
    # the outer loop's bookkeeping (indices, shares, alphas) lives on the CPU
    idx = torch.tensor([labels.index(a) for a in cfg.attributes], device="cpu")
    k = len(attrs)
    want = torch.tensor(
        cfg.ratios if cfg.ratios is not None else [1 / k] * k, dtype=torch.float64, device="cpu"
    )
    # per target: its rows c_i, and the attribute rows a_k aligned to them
    c_rows, a_rows = [], []
    for t in targets:
        pairs = [_aligned(model, [t], [a], cfg.token_mode) for a in attrs]
        n = min(len(p[0]) for p in pairs)
        c_rows.append(pairs[0][0][:n])
        a_rows.append(torch.stack([p[1][:n] for p in pairs]))  # [k, n, d]
    alpha = torch.zeros(len(targets), k, dtype=torch.float64, device="cpu")
    history = []
    for it in range(cfg.max_iterations + 1):
        shares = torch.stack([_shares(model, t, idx, it, cfg) for t in targets])
        history.append(shares.tolist())
        err = want - shares
        done = err.abs().amax(1) < cfg.max_diff
        if bool(done.all()) or it == cfg.max_iterations:
            break
        alpha += cfg.step_size * err * (~done).unsqueeze(1)
        c_e = torch.cat(c_rows)
        mixed = zip(c_rows, alpha, a_rows, strict=True)
        c_v = torch.cat([c + torch.einsum("k,knd->nd", a.to(c), r) for c, a, r in mixed])
        for proj, w in zip(layers, originals, strict=True):
            proj.weight.copy_(
                least_squares_edit(w, c_e, c_v @ w.T, c_p, cfg.lam, cfg.erase_scale, s_p)
            )
    return {
        "attributes": attrs,
        "desired_ratios": want.tolist(),
        "alphas": alpha.tolist(),
        "ratio_history": history,
        "iterations": len(history) - 1,
    }


def _shares(model, prompt: str, idx: torch.Tensor, it: int, cfg: UCEConfig) -> torch.Tensor:
    """Share of each attribute among ``debias_images`` generations of ``prompt`` (the evaluator's
    logits restricted to the attribute labels, as a zero-shot classifier over the candidates)."""
    images = model.sample([prompt], n=cfg.debias_images, steps=cfg.debias_steps, seed=1000 * it)
    head = model.world.kind_of(cfg.attributes[0])
    ev = model.evaluator.eval()
    with torch.no_grad():
        logits = ev(images)[head][:, idx]
    picked = logits.argmax(1).cpu()
    return torch.bincount(picked, minlength=len(idx)).double() / len(picked)
