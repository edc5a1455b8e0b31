"""concept_prune: training-free pruning of skilled FFN neurons (Chavhan et al., ICLR 2025).

Paper: "ConceptPrune: Concept Editing in Diffusion Models via Skilled Neuron Pruning" (Ruchika
Chavhan, Da Li, Timothy Hospedales).

https://arxiv.org/abs/2405.19237 — official code: github.com/ruchikachavhan/concept-prune.

Idea: training-free. The second linear layer of every UNet feed-forward block (``ff.net.2``, whose
input is the GEGLU output) holds "skilled neurons" for a concept. Generate with paired prompts, a
*target* prompt that names the concept and a *base* prompt that does not, and record, per layer
and denoising step t, the column norms ||X_j|| of that layer's input (every token row of the
batch, each row L2-normalised first, as the official receiver does). The WANDA score of weight
W_ij is |W_ij| * ||X_j||. At each step and layer the skilled weights are the row-wise top
``skill_ratio`` of the target score whose target score also beats the base score. The masks of
the first ``union_steps`` steps are united (a weight is kept when it is selected in more than
``select_ratio`` * tau steps) and those weights are zeroed, permanently.

Symbols: k = ``skill_ratio``; tau = ``union_steps``. Paper defaults: k = 1 %, SD-1.5's 50
sampler steps, plain union; tau is chosen per concept in the paper (Table 7, not verified here),
10 by default.

Prompts: ``target_prompts`` / ``base_prompts`` if given (paired, same length). Otherwise, on a
model with a labelled world, the target prompts are the world's evaluation captions that contain
the target and each base prompt is the same caption *without* the concept, as in the paper ("a
cat" / "a cat in the style of Van Gogh", "a room" / "a parachute in a room"): its words leave
with it ("a red star in striped style" -> "a red star"), an object leaves the world's generic
noun ("a red shape in striped style"), a one-attribute caption leaves the empty prompt; on a
plain checkpoint the target text is paired with the empty prompt.

Differences from the official code: the union is capped at ``max_fraction`` of each layer's
weights (the weights selected at the most steps, then by the largest target-minus-base score,
are kept), so the pruned share never exceeds the configured fraction (the paper reports about
0.12 % of all weights pruned, well under the 1 % default cap); images of a prompt are generated
with seeds ``seed .. seed + n - 1`` by the library's own sampler.

Toy preset: k and cap 30 %, far above the paper's, because toy-sd's small FFNs do not localise a
concept in a few neurons; even zeroing every ``ff.net.2`` weight leaves most toy concepts intact
(they reach the image through cross-attention and the residual path), so the UA bar is out of
reach on toy-sd. Figures (and that upper bound, ``experiments/prune_bound.py``):
docs/results.md#concept_prune
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genunlearn.core.params import own_storage
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError


@dataclass(frozen=True)
class ConceptPruneConfig:
    """ConceptPrune settings (paper defaults).

    Args:
        skill_ratio: k, the row-wise share of each FFN weight scored as skilled per step (0, 1].
        union_steps: tau, the first denoising steps whose masks are united (>= 1).
        select_ratio: a weight is pruned if selected at more than select_ratio * tau steps [0, 1).
        max_fraction: cap on the pruned share of each FFN weight (0, 1].
        steps: sampler steps while recording (None: the model's default).
        guidance: CFG scale while recording (None: the model's default).
        images_per_prompt: images per prompt while recording.
        seed: seed of image 0 of every prompt.
        target_prompts: prompts that name the concept (None: built from the model's world).
        base_prompts: their paired prompts without it (None: built as described above).
        hook_module: which Linear of each transformer block is scored and pruned: "ffn" (the
            paper's ``ff.net.2``), or the official code's variants "ffn_in" (``ff.net.0.proj``),
            "attn_key" / "attn_val" (cross-attention ``to_k`` / ``to_v``, whose input is the
            prompt embedding).
    """

    skill_ratio: float = 0.01
    union_steps: int = 10
    select_ratio: float = 0.0
    max_fraction: float = 0.01
    steps: int | None = 50
    guidance: float | None = None
    images_per_prompt: int = 1
    seed: int = 0
    target_prompts: tuple[str, ...] | None = None
    base_prompts: tuple[str, ...] | None = None
    hook_module: str = "ffn"


#: hooked layers per ``hook_module`` (official names: unet, unet-ffn-1, attn_key, attn_val)
HOOKS = {
    "ffn": "ff.net.2",
    "ffn_in": "ff.net.0.proj",
    "attn_key": "attn2.to_k",
    "attn_val": "attn2.to_v",
}


def pruned_layers(model, hook_module: str = "ffn") -> dict[str, torch.nn.Linear]:
    """The pruned Linear of every UNet transformer block, by UNet module name (default: the
    second linear layer of every feed-forward block)."""
    suffix = HOOKS[hook_module]
    return {
        n: m
        for n, m in model.denoiser.named_modules()
        if n.endswith(suffix) and isinstance(m, torch.nn.Linear)
    }


def paired_prompts(model, task, cfg: ConceptPruneConfig) -> tuple[list[str], list[str]]:
    """(target prompts, base prompts), paired one to one."""
    if cfg.target_prompts is not None or cfg.base_prompts is not None:
        tp, bp = list(cfg.target_prompts or ()), list(cfg.base_prompts or ())
        if not tp or len(tp) != len(bp):
            raise GenUnlearnError(
                "concept_prune target_prompts and base_prompts must both be given, with the same "
                f"number of prompts (got {len(tp)} and {len(bp)})"
            )
        return tp, bp
    world = getattr(model, "world", None)
    if world is None or not all(world.kind_of(t) for t in task.targets):
        return list(task.targets), [""] * len(task.targets)
    has, _ = world.split(list(task.targets))
    targets = [world.caption(lab) for lab in has]
    bases = [
        world.caption_without(lab, [k for k, v in lab.items() if v in task.targets]) for lab in has
    ]
    return targets, bases


def _check(cfg: ConceptPruneConfig) -> None:
    for name in ("skill_ratio", "max_fraction"):
        v = getattr(cfg, name)
        if not 0 < v <= 1:
            raise GenUnlearnError(f"concept_prune {name} must be in (0, 1], got {v}")
    if not 0 <= cfg.select_ratio < 1:
        raise GenUnlearnError(
            f"concept_prune select_ratio must be in [0, 1), got {cfg.select_ratio}"
        )
    if cfg.hook_module not in HOOKS:
        raise GenUnlearnError(
            f"concept_prune hook_module {cfg.hook_module!r} is unknown; valid: {sorted(HOOKS)}"
        )
    if cfg.union_steps < 1 or cfg.images_per_prompt < 1:
        raise GenUnlearnError("concept_prune union_steps and images_per_prompt must be >= 1")


@torch.no_grad()
def column_norms(model, prompts: list[str], cfg: ConceptPruneConfig) -> dict[str, torch.Tensor]:
    """Per pruned layer, the [steps, in_features] column norms of its input while sampling."""
    layers = pruned_layers(model, cfg.hook_module)
    sums: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    step = {"t": -1}

    def on_unet(module, args, kwargs):
        step["t"] += 1  # one UNet call per denoising step (all prompts in one batch)

    def on_layer(name):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            sq = torch.nn.functional.normalize(x, dim=1).pow(2).sum(0)
            rows = sums[name]
            if len(rows) <= step["t"]:
                rows.append(sq)
            else:
                rows[step["t"]] = rows[step["t"]] + sq

        return hook

    handles = [model.denoiser.register_forward_pre_hook(on_unet, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(on_layer(n)) for n, m in layers.items()]
    try:
        model.sample(
            prompts, n=cfg.images_per_prompt, steps=cfg.steps, guidance=cfg.guidance,
            seed=cfg.seed, batch_size=max(256, len(prompts) * cfg.images_per_prompt),
        )  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    return {n: torch.stack(v).sqrt() for n, v in sums.items()}


def skilled_mask(
    weight: torch.Tensor, target: torch.Tensor, base: torch.Tensor, cfg: ConceptPruneConfig
) -> torch.Tensor:
    """Boolean mask of the weights to prune in one layer from its [steps, in] column norms."""
    w = weight.detach().abs().float()
    tau = min(cfg.union_steps, len(target))
    k = max(1, int(cfg.skill_ratio * w.shape[1]))
    votes = torch.zeros_like(w)
    margin = torch.zeros_like(w)
    for t in range(tau):
        s_t, s_b = w * target[t], w * base[t]
        top = torch.zeros_like(w, dtype=torch.bool)
        top.scatter_(1, s_t.topk(k, dim=1).indices, True)
        votes += (top & (s_t > s_b)).float()
        margin += s_t - s_b
    mask = votes > cfg.select_ratio * tau
    cap = int(cfg.max_fraction * w.numel())
    if int(mask.sum()) > cap:
        # keep the most often selected weights, then the largest target-over-base margin
        rank = torch.where(mask, votes * (1 + margin.abs().max()) + margin, -torch.inf).flatten()
        keep = rank.topk(cap).indices if cap else rank[:0].long()
        mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        mask[keep] = True
        mask = mask.view_as(w)
    return mask


@register_method(
    "concept_prune",
    config=ConceptPruneConfig,
    requires=(Capability.TRAINABLE_DENOISER,),
    presets={
        "paper": {},
        "toy": {"steps": None, "skill_ratio": 0.3, "max_fraction": 0.3, "union_steps": 25},
        "smoke": {"steps": 3, "union_steps": 2, "skill_ratio": 0.05, "max_fraction": 0.05},
    },
    paper="https://arxiv.org/abs/2405.19237",
    modifies=r"^unet\..*\.(ff\.net\.(2|0\.proj)|attn2\.to_[kv])\.weight$",
)
def erase(model, task, cfg: ConceptPruneConfig) -> ErasureResult:
    """Zero the skilled FFN weights of the target (training-free)."""
    _check(cfg)
    layers = pruned_layers(model, cfg.hook_module)
    if not layers:
        raise GenUnlearnError(
            f"model {model.model_id} has no UNet {HOOKS[cfg.hook_module]} layers to prune"
        )
    targets, bases = paired_prompts(model, task, cfg)
    norm_t = column_norms(model, targets, cfg)
    norm_b = column_norms(model, bases, cfg)
    pruned, total = {}, 0
    own_storage(layer.weight for layer in layers.values())  # pruned in place: copies keep theirs
    with torch.no_grad():
        for name, layer in layers.items():
            mask = skilled_mask(layer.weight, norm_t[name], norm_b[name], cfg)
            layer.weight.masked_fill_(mask, 0.0)
            pruned[name] = int(mask.sum())
            total += layer.weight.numel()
    return ErasureResult(
        info={
            "target_prompts": targets[:4],
            "base_prompts": bases[:4],
            "n_prompt_pairs": len(targets),
            "pruned_weights": sum(pruned.values()),
            "pruned_fraction_ffn": sum(pruned.values()) / max(1, total),
            "pruned_per_layer": pruned,
        }
    )
