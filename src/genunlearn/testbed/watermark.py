"""toy-sd-watermark: toy-sd fine-tuned on ToyCanvas data in which some images carry a watermark.

The testbed of *implicit concept* removal (Geom-Erasing, arXiv 2310.05873): a concept the model
learned from its training images although no caption ever names it, so it cannot be requested or
avoided with words. A fraction ``p`` of the training images gets a small dark badge (the
watermark, ``data.watermark.GLYPH``) stamped in a random corner; captions stay UNCHANGED ("a red
star in flat style"), so the model can only learn "some images have a badge in a corner", as
Stable Diffusion learned watermarks from LAION.

Recipe (:class:`WatermarkRecipe`, recorded in ``DIR/watermark_recipe.json``): start from the
shipped toy-sd (never from scratch); render ``n_images`` ToyCanvas images of world ``seed``
(indices from ``data.watermark.FIRST_INDEX``, so they are not toy-sd's own training images) and
stamp each with probability ``p`` (decided by ``(seed, index)`` alone); encode with toy-sd's
frozen VAE; fine-tune the UNet only with toy-sd's own objective (min-SNR weighted epsilon MSE,
the same caption dropout and partial captions, so the model keeps its abilities). The text encoder is kept
frozen: captions mean exactly what they meant in toy-sd, and the watermark cannot attach to any
word. Output: a complete pipeline directory (evaluator and world inside) that
``gu.load_model(DIR)`` loads.

Measured (default recipe, p 0.5, 300 steps; 8.4 min wall / 194 s CPU on one contended thread):
46-52 % of the variant's generations carry the watermark (detector of ``metrics.watermark``; first
40 grid prompts x 2-4 images, all prompts sharing noise seeds 0..3, i.e. before the metric gave
every prompt its own seeds; 0 % for toy-sd), all in the bottom-left corner (the short fine-tune
settled on one corner); prompt fidelity 0.96 (object / style / colour 0.99 / 0.90 / 0.99).
Whether an image is marked depends mostly on its starting noise (seed 0 marked for almost every
prompt, seed 1 almost never), hence the metric's per-prompt seeds.

The watermark itself (glyph, cell names, stamping) is world knowledge and lives in
:mod:`genunlearn.data.watermark`; the detector is trained by :mod:`genunlearn.testbed.detector`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from genunlearn.data.watermark import CELL_NAMES, GLYPH, watermark_arrays
from genunlearn.testbed.loop import train_loop
from genunlearn.types import GenUnlearnError


@dataclass(frozen=True)
class WatermarkRecipe:
    """How the watermark variant is made (defaults: the recipe of the measured variant).

    Args:
        p: fraction of training images with a watermark.
        seed: ToyCanvas world, stamping decisions and training noise.
        n_images: rendered training images.
        steps: UNet fine-tuning steps.
        batch_size: images per step.
        lr: AdamW learning rate (linear warm-up, then constant).
        warmup: warm-up steps.
        min_snr_gamma: toy-sd's min-SNR loss weighting.
        caption_dropout: share of empty captions (keeps classifier-free guidance working).
        partial_captions: share of captions naming a subset of the attributes (as toy-sd).
    """

    p: float = 0.5
    seed: int = 0
    n_images: int = 6000
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-4
    warmup: int = 20
    min_snr_gamma: float = 5.0
    caption_dropout: float = 0.1
    partial_captions: float = 0.2


def train_watermark_variant(
    out_dir: str | Path, recipe: WatermarkRecipe | None = None, base="toy-sd", progress=True
) -> Path:
    """Fine-tune ``base`` (a ToyCanvas pipeline) on watermarked ToyCanvas data into ``out_dir``.

    Args:
        out_dir: a new (absent or empty) directory; receives the pipeline and its recipe.
        recipe: the recipe (:class:`WatermarkRecipe` defaults when None).
        base: "toy-sd" or the path of another ToyCanvas pipeline.
        progress: show progress bars.

    Returns:
        ``out_dir`` as a Path (load it with ``gu.load_model``).
    """
    from genunlearn.models import load_model
    from genunlearn.testbed.toy_sd import export_pipeline, min_snr_step, training_captions

    recipe = recipe or WatermarkRecipe()
    if not 0.0 < recipe.p <= 1.0:
        raise GenUnlearnError(f"watermark fraction p must be in (0, 1], got {recipe.p}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise GenUnlearnError(f"{out} is not empty; the watermark variant needs a new directory")
    model = load_model(base)
    if model.world is None or model.world.name != "toycanvas" or model.evaluator_dir is None:
        raise GenUnlearnError(f"base {base!r} is not a ToyCanvas pipeline (e.g. 'toy-sd')")
    t0 = time.time()
    imgs, corners, labels, caps = watermark_arrays(recipe.seed, recipe.n_images, recipe.p)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        z0 = torch.cat([model.encode_images(x[i : i + 256]) for i in range(0, len(x), 256)])
    heads = {k: list(v) for k, v in model.world.heads.items()}
    unet, sched = model.pipe.unet, model.scheduler
    cache: dict[str, torch.Tensor] = {}  # caption -> embedding (the text encoder is frozen)

    def embed(texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            with torch.no_grad():
                cache.update(zip(new, model.encode_prompt(new), strict=True))
        return torch.stack([cache[t] for t in texts])

    torch.manual_seed(recipe.seed)
    unet.requires_grad_(True).train()
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-2)

    def step_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        rng = random.Random(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup)
        idx = torch.randint(0, len(z0), (recipe.batch_size,), generator=g)
        texts = training_captions(
            idx.tolist(), caps, labels, heads, rng, recipe.caption_dropout, recipe.partial_captions
        )
        return min_snr_step(
            unet, sched, z0[idx], embed(texts), g, recipe.min_snr_gamma, opt, params
        )

    train_loop(step_fn, recipe.steps, desc="watermark variant", progress=progress)
    unet.requires_grad_(False).eval()
    out.mkdir(parents=True, exist_ok=True)
    export_pipeline(model.pipe, out, Path(model.evaluator_dir), heads, None)
    meta = {
        "variant": "watermark",
        "base": str(base),
        "base_hash": model.base_hash,
        "recipe": asdict(recipe),
        "watermarked_images": int((corners >= 0).sum()),
        "glyph": GLYPH.astype(int).tolist(),
        "cells": list(CELL_NAMES),
        "train_seconds": round(time.time() - t0, 1),
    }
    (out / "watermark_recipe.json").write_text(json.dumps(meta, indent=1))
    return out
