"""Evaluator-based protocols: prompt fidelity and UnlearnCanvas' UA / IRA / CRA.

UnlearnCanvas (Zhang et al., https://arxiv.org/abs/2402.11846) scores an unlearned model with a
classifier of its world. For a target concept of kind k (style or object; ToyCanvas adds colour):

- UA  = share of images whose prompt contains the target that the evaluator does **not** label as
  the target (head k).
- IRA = head-k accuracy on images whose prompt does not contain the target (the other concepts of
  the same kind).
- CRA = accuracy of the other heads on those same retain images (mean over heads; per head as
  ``cra_<head>``). UnlearnCanvas' release script leaves open whether CRA uses all images or those
  without the target; we use those without it, so that CRA measures retention only.

Images that an output filter blocked (e.g. Espresso's; ``models/filtered.py``) count as showing no
concept: erased for UA, wrong for IRA / CRA; ``filtered_target`` / ``filtered_retain`` report the
blocked share of each split for such models.

Prompts are the world's evaluation grid (ToyCanvas: every object x style pair once, colours
cycling), ``n_per_prompt`` images each at seeds ``seed .. seed+n-1``. ``fid`` / ``kid`` are the
feature FID / KID of the retain images against real world images of the same labels.

``evaluator=PATH`` (both protocols) judges with local classifiers instead of the world's
evaluator: a judge spec (``models/judge.py``, docs/judges.md), e.g. UnlearnCanvas' own ViT-L
style and object classifiers. The judge's labels are then the world: the grid crosses its heads'
prompt labels, prompts come from its template (UnlearnCanvas' "A {object} image in {style}
style." by default), and the task's targets must be its labels ("Van_Gogh", "style:Van_Gogh",
or "van gogh"), so a checkpoint with no world of its own can be scored. FID / KID then use the
judge's features and need real images of the judge's labels: only a model whose own world
renders them (ToyCanvas) has those; elsewhere ``fid`` / ``kid`` are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from genunlearn.registry import register_metric
from genunlearn.types import GenUnlearnError


@dataclass(frozen=True)
class FidelityConfig:
    """Args: n_per_prompt images per grid prompt; seed of image 0; sampler steps and guidance;
    ``evaluator``: a judge spec (file or folder) to judge with instead of the world's evaluator."""

    n_per_prompt: int = 5
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    evaluator: str | os.PathLike | None = None


#: the fewest images a UA or IRA rate rests on when ``n_per_prompt`` is left to the protocol
MIN_IMAGES = 50


@dataclass(frozen=True)
class UnlearnCanvasConfig:
    """Args: as :class:`FidelityConfig` (``evaluator`` included), plus ``fid`` (compute the
    feature FID) and ``real_seed``.

    ``n_per_prompt`` None (default): 3 images per prompt, more where a split has few prompts, so
    that UA and IRA each rest on at least :data:`MIN_IMAGES` images (a one-class-per-folder world
    has one prompt per class).
    """

    n_per_prompt: int | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    fid: bool = True
    real_seed: int = 9_999
    evaluator: str | os.PathLike | None = None


def _need_world(model):
    if getattr(model, "world", None) is None or getattr(model, "evaluator_dir", None) is None:
        raise GenUnlearnError(
            f"model {model.model_id} has no labelled world and evaluator; this protocol needs "
            "toy-sd or a pipeline trained by 'genunlearn testbed train'"
        )
    return model.world


def judge_setup(model, cfg):
    """(world, judge) of a protocol run: the model's world and None, or, with
    ``cfg.evaluator``, the judge's world and the judge (loaded on the model's device)."""
    if cfg.evaluator is None:
        return _need_world(model), None
    from genunlearn.models.judge import load_judge

    judge = load_judge(cfg.evaluator, device=getattr(model, "device", None))
    return judge.world, judge


def rendering_world(model, world):
    """The model's world where it renders real images of every label set of ``world`` (a judge
    over ToyCanvas labels on toy-sd), else None."""
    own = getattr(model, "world", None)
    if own is None or set(own.heads) != set(world.heads):
        return None
    return own if all(set(world.heads[h]) <= set(own.heads[h]) for h in world.heads) else None


def per_prompt(cfg, n_prompts: int) -> int:
    """Images per prompt for a split of ``n_prompts`` prompts: the configured number, or (None)
    3, raised so that the split holds at least :data:`MIN_IMAGES` images."""
    if cfg.n_per_prompt is not None:
        return cfg.n_per_prompt
    return max(3, -(-MIN_IMAGES // max(1, n_prompts)))


def generate_and_label(model, label_sets, cfg, n: int | None = None, judge=None):
    """Sample ``n`` (default ``cfg.n_per_prompt``) images per label set and label them with the
    world's evaluator, or ``judge`` (its prompts, its labels); returns
    (images, predictions, labels)."""
    n = n if n is not None else per_prompt(cfg, len(label_sets))
    caption = judge.caption if judge is not None else model.world.caption
    prompts = [caption(lab) for lab in label_sets]
    images = model.sample(prompts, n=n, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed)
    preds = (judge if judge is not None else model.evaluator).predict(images)
    blocked = getattr(model, "last_blocked", None)
    if blocked is not None:  # an output filter blocked these: they show no concept at all
        from genunlearn.models.filtered import BLOCKED

        flags = blocked.tolist()
        preds = {h: [BLOCKED if b else p for p, b in zip(v, flags, strict=True)]
                 for h, v in preds.items()}  # fmt: skip
    labels = [lab for lab in label_sets for _ in range(n)]
    return images, preds, labels


def _blocked_share(preds) -> float:
    from genunlearn.models.filtered import BLOCKED

    first = next(iter(preds.values()))
    return sum(p == BLOCKED for p in first) / max(1, len(first))


def _acc(preds, labels, head) -> float:
    return sum(p == lab[head] for p, lab in zip(preds[head], labels, strict=True)) / max(
        1, len(labels)
    )


@register_metric("fidelity", config=FidelityConfig)
def fidelity(model, task, cfg: FidelityConfig) -> dict[str, float]:
    """Per-head accuracy of the evaluator on the model's generations for the whole grid."""
    world, judge = judge_setup(model, cfg)
    _, preds, labels = generate_and_label(model, world.grid(), cfg, judge=judge)
    out = {f"{h}_acc": _acc(preds, labels, h) for h in world.heads}
    out["n_images"] = len(labels)
    out["n_prompts"] = len(world.grid())
    return out


def real_images(world, label_sets, n: int, seed: int) -> torch.Tensor | None:
    """Real world images with the given labels, n per label set (None: the world renders none)."""
    if not label_sets or world.render(label_sets[0], seed, 0) is None:
        return None
    arr = [world.render(lab, seed, i)[0] for lab in label_sets for i in range(n)]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255.0


@register_metric("unlearncanvas", config=UnlearnCanvasConfig)
def unlearncanvas(model, task, cfg: UnlearnCanvasConfig) -> dict[str, float]:
    """UA, IRA, CRA (and feature FID) for the task's targets, which must be world concepts (or,
    with ``evaluator``, labels of the judge)."""
    from genunlearn.metrics.fid import features, frechet_distance, kernel_distance

    if task is None:
        raise GenUnlearnError("protocol 'unlearncanvas' needs a task (the erased target)")
    world, judge = judge_setup(model, cfg)
    targets = [judge.resolve(t) for t in task.targets] if judge else list(task.targets)
    kinds = {world.concept(t).kind for t in targets}
    has, without = world.split(targets)
    if not has or not without:
        raise GenUnlearnError(
            f"the {world.name} grid has {len(has)} prompts with and {len(without)} without "
            f"{', '.join(targets)}; UA and IRA need both (erase fewer concepts at once)"
        )
    _, p_t, l_t = generate_and_label(model, has, cfg, judge=judge)
    images_r, p_r, l_r = generate_and_label(model, without, cfg, judge=judge)
    erased = [
        not any(lab[k] == p_t[k][i] and lab[k] in targets for k in kinds)
        for i, lab in enumerate(l_t)
    ]
    # every rate carries the number of images it rests on (``<rate>_n``)
    out = {"ua": sum(erased) / len(erased), "ua_n": len(erased)}
    out["ira"] = sum(_acc(p_r, l_r, k) for k in kinds) / len(kinds)
    out["ira_n"] = len(l_r)
    # CRA, cross-domain retention, needs a head the target is not of; a one-head world (a
    # class-per-folder testbed) has none, so CRA is left out, not reported as 0
    others = [h for h in world.heads if h not in kinds]
    for h in others:
        out[f"cra_{h}"] = _acc(p_r, l_r, h)
    if others:
        out["cra"] = sum(out[f"cra_{h}"] for h in others) / len(others)
        out["cra_n"] = len(l_r)
        # not part of UnlearnCanvas: the other heads' accuracy on the TARGET prompts' images,
        # which shows whether erasing a style also destroyed the object it was drawn on
        out["target_cra"] = sum(_acc(p_t, l_t, h) for h in others) / len(others)
        out["target_cra_n"] = len(l_t)
    real_world = world if judge is None else rendering_world(model, world)
    real = (
        real_images(real_world, without, per_prompt(cfg, len(without)), cfg.real_seed)
        if cfg.fid and real_world is not None
        else None
    )
    if real is not None:
        extract = (judge if judge is not None else model.evaluator).features
        f_gen = features(extract, images_r)
        f_real = features(extract, real)
        out["fid"] = frechet_distance(f_gen, f_real)
        out["kid"] = kernel_distance(f_gen, f_real)
    if getattr(model, "output_filters", None):  # filtered models: how much each split lost
        out["filtered_target"] = _blocked_share(p_t)
        out["filtered_retain"] = _blocked_share(p_r)
    out["n_target_images"] = len(l_t)
    out["n_retain_images"] = len(l_r)
    return out
