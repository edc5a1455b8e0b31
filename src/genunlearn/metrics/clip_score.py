"""CLIP score: how well a model's images match their prompts (text-image cosine similarity).

The CLIP score of Hessel et al. (https://arxiv.org/abs/2104.08718) as the unlearning literature
uses it: the cosine similarity of a CLIP image embedding and its prompt's text embedding,
averaged over images. The field reports it on two scales (reference notes B.3): the raw
``logits_per_image`` of OpenAI CLIP, which is 100 x cosine (UCE, MACE, ~30 on SD), and that value
divided by 100 (AdvUnlearn, the UnlearnDiffAtk leaderboard, ~0.30). genunlearn returns the
**cosine** by default (``scale="cosine"``) and 100 x cosine with ``scale="x100"``; every result
carries ``clip_scale`` (1 or 100) so rows are never ambiguous. Hessel et al.'s 2.5 x max(cos, 0)
rescaling is not used, as none of the unlearning papers use it.

The model is toy-clip on ToyCanvas (``clip="toy-clip"``, committed weights) or any local CLIP
directory in the ``CLIPModel.save_pretrained`` layout (``clip="/path/to/clip-vit-base-patch32"``);
the same code scores both. Prompts come from a COCO-caption or I2P CSV (``prompts=``, each row
with its own seed and guidance), else from the world's evaluation grid: with a task,
``clip_target`` (prompts that contain the target) and ``clip_retain`` (the others) are reported
beside the overall ``clip_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genunlearn.registry import register_metric
from genunlearn.types import GenUnlearnError

SCALES = {"cosine": 1.0, "x100": 100.0}
_CLIPS: dict[str, object] = {}


@dataclass(frozen=True)
class ClipScoreConfig:
    """Args:
    clip: "toy-clip" or a local CLIP directory.
    scale: "cosine" (default) or "x100" (UCE / MACE's logit scale).
    prompts: a COCO-caption or I2P CSV; None: the world's grid (or the task's texts).
    limit: at most this many CSV rows.
    n_per_prompt: images per prompt.
    seed: seed of image 0 for grid / task prompts (CSV rows use their own seeds).
    steps: sampler steps (None: the model's default).
    guidance: guidance for grid / task prompts (None: the model's default).
    """

    clip: str = "toy-clip"
    scale: str = "cosine"
    prompts: str | None = None
    limit: int | None = None
    n_per_prompt: int = 1
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None


def get_clip(name_or_path: str = "toy-clip"):
    """A loaded CLIP (cached per name); missing weights raise an error naming the path."""
    from genunlearn.models.clip import load_clip

    key = str(name_or_path)
    if key not in _CLIPS:
        _CLIPS[key] = load_clip(key)
    return _CLIPS[key]


def _factor(scale: str) -> float:
    if scale not in SCALES:
        raise GenUnlearnError(f"unknown CLIP score scale {scale!r}; valid: {', '.join(SCALES)}")
    return SCALES[scale]


def clip_scores(
    images: torch.Tensor, prompts: Sequence[str], clip="toy-clip", scale: str = "cosine"
) -> torch.Tensor:
    """Per-image CLIP score of ``images`` [N, 3, H, W] in [0, 1] against their ``prompts`` (N).

    Args:
        images: the images.
        prompts: one prompt per image.
        clip: a name or directory for :func:`get_clip`, or a loaded ``Clip``.
        scale: "cosine" or "x100".

    Returns:
        Float tensor [N].
    """
    factor = _factor(scale)
    model = get_clip(clip) if isinstance(clip, str) else clip
    return model.cosine(images, list(prompts)) * factor


def _summary(name: str, values: torch.Tensor) -> dict[str, float]:
    out = {name: float(values.mean())}
    if len(values) > 1:
        out[f"{name}_std"] = float(values.std())
    return out


@register_metric("clip_score", config=ClipScoreConfig)
def clip_score(model, task, cfg: ClipScoreConfig) -> dict[str, float]:
    """Generate the prompts' images and average their CLIP scores (see the module docstring)."""
    from genunlearn.data.prompts import generate, read_prompts

    factor = _factor(cfg.scale)
    clip = get_clip(cfg.clip)  # fail on missing weights before any sampling
    n = cfg.n_per_prompt
    world = getattr(model, "world", None)
    out: dict[str, float] = {}
    if cfg.prompts is not None:
        rows = read_prompts(cfg.prompts, limit=cfg.limit)
        images = generate(model, rows, n_per_prompt=n, steps=cfg.steps)
        texts = [r.prompt for r in rows for _ in range(n)]
        out.update(_summary("clip_score", clip_scores(images, texts, clip, cfg.scale)))
    elif world is not None and (task is None or all(world.kind_of(t) for t in task.targets)):
        groups = {"clip_score": world.grid()}
        if task is not None:
            has, without = world.split(list(task.targets))
            groups = {"clip_target": has, "clip_retain": without}
        all_scores = []
        for name, label_sets in groups.items():
            prompts = [world.caption(lab) for lab in label_sets]
            images = model.sample(
                prompts, n=n, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed
            )
            s = clip_scores(images, [p for p in prompts for _ in range(n)], clip, cfg.scale)
            out.update(_summary(name, s))
            all_scores.append(s)
        if task is not None:
            out.update(_summary("clip_score", torch.cat(all_scores)))
    elif task is not None:
        texts = list(task.targets)
        images = model.sample(texts, n=n, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed)
        s = clip_scores(images, [t for t in texts for _ in range(n)], clip, cfg.scale)
        out.update(_summary("clip_score", s))
    else:
        raise GenUnlearnError(
            "protocol 'clip_score' needs prompts: pass prompts=<COCO or I2P CSV>, a task, or use "
            "a model with a labelled world"
        )
    out["clip_scale"] = factor
    return out
