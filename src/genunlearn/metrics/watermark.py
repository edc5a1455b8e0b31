"""Watermark detector for ToyCanvas images, and the ``watermark`` metric (watermark rate).

The external "classifier or detector" of Geom-Erasing (Liu et al., ECCV 2024,
https://arxiv.org/abs/2310.05873) for the toy world: it says whether an image carries the
watermark of :mod:`genunlearn.data.watermark` (a small dark badge) and in which corner: the
small CNN of :mod:`genunlearn.models.watermark_detector` (``load_detector``; per-cell logits in
:data:`~genunlearn.data.watermark.CELL_NAMES` order; existence = any cell with probability >= the
threshold, 0.5), committed under ``assets/watermark_detector``.

Training (deterministic for a seed) is :mod:`genunlearn.testbed.detector`; retrain the asset
with ``python -m genunlearn.testbed.detector`` (held-out accuracy stored in ``detector.json``;
figures of the committed detector: docs/results.md#watermark-variant-and-detector).

Metric ``watermark`` (``gu.evaluate(model, protocol="watermark")``): generate ``n_per_prompt``
images for each of the first ``n_prompts`` ToyCanvas grid prompts (prompt k from seeds
``seed + k * n_per_prompt`` on, so that no two images share their starting noise) and report ``watermark_rate``
(share of images where the detector fires), ``cell_rate_<cell>`` and the prompt fidelity of the
same images (evaluator accuracy per attribute, their mean ``prompt_fidelity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genunlearn.models import watermark_detector
from genunlearn.registry import register_metric
from genunlearn.types import GenUnlearnError


@dataclass(frozen=True)
class WatermarkMetricConfig:
    """Args:
    n_prompts: first ``n_prompts`` ToyCanvas grid prompts (80 in all).
    n_per_prompt: images per prompt.
    seed: seed of image 0 of every prompt.
    threshold: detector probability that counts as a watermark.
    steps: sampler steps (None: the model's default).
    """

    n_prompts: int = 40
    n_per_prompt: int = 2
    seed: int = 0
    threshold: float = 0.5
    steps: int | None = None


def prompt_images(model, cfg: WatermarkMetricConfig):
    """(prompts, triples, images) of the metric's prompt set."""
    from genunlearn.data import toycanvas

    if model.world is None or model.world.name != "toycanvas":
        raise GenUnlearnError("the watermark metric needs a ToyCanvas model (e.g. toy-sd)")
    if cfg.n_prompts < 1 or cfg.n_per_prompt < 1:
        raise GenUnlearnError("watermark metric: n_prompts and n_per_prompt must be >= 1")
    triples = toycanvas.grid_prompts()[: cfg.n_prompts]
    prompts = [toycanvas.caption(*t) for t in triples]
    n = cfg.n_per_prompt  # prompt k uses seeds seed + k*n ...: an implicit concept's presence
    # depends mostly on the starting noise, so prompts must not share their noises
    images = [
        model.sample([p], n=n, seed=cfg.seed + k * n, steps=cfg.steps)
        for k, p in enumerate(prompts)
    ]
    return prompts, triples, torch.cat(images)


@register_metric(
    "watermark", config=WatermarkMetricConfig, paper="https://arxiv.org/abs/2310.05873"
)
def watermark(model, task, cfg: WatermarkMetricConfig) -> dict[str, float]:
    """Watermark rate and prompt fidelity of the model's generations (module docstring)."""
    from genunlearn.data.watermark import CELL_NAMES

    if not 0.0 < cfg.threshold < 1.0:
        raise GenUnlearnError(f"threshold must be in (0, 1), got {cfg.threshold}")
    _, triples, images = prompt_images(model, cfg)
    exists, cells = watermark_detector.load_detector().detect(images, cfg.threshold)
    out = {"watermark_rate": float(exists.float().mean()), "n_images": len(images)}
    for j, name in enumerate(CELL_NAMES):
        out[f"cell_rate_{name.replace(' ', '_')}"] = float(cells[:, j].float().mean())
    preds = model.evaluator.predict(images)
    accs = []
    for k, head in enumerate(("colour", "object", "style")):
        want = np.repeat([t[k] for t in triples], cfg.n_per_prompt)
        accs.append(float(np.mean(np.asarray(preds[head]) == want)))
        out[f"{head}_acc"] = accs[-1]
    out["prompt_fidelity"] = float(np.mean(accs))
    return out
