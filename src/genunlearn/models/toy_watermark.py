"""toy-sd-watermark: toy-sd fine-tuned on ToyCanvas data in which some images carry a watermark.

The testbed of *implicit concept* removal (Geom-Erasing, arXiv 2310.05873): a concept the model
learned from its training images although no caption ever names it, so it cannot be requested or
avoided with words. A fraction ``p`` of the training images gets a small dark badge (the watermark,
:data:`GLYPH`) stamped in a random corner; captions stay UNCHANGED ("a red star in flat style"),
so the model can only learn "some images have a badge in a corner", as Stable Diffusion learned
watermarks from LAION.

Recipe (:class:`WatermarkRecipe`, recorded in ``DIR/watermark_recipe.json``): start from the
shipped toy-sd (never from scratch); render ``n_images`` ToyCanvas images of world ``seed``
(indices from :data:`FIRST_INDEX`, so they are not toy-sd's own training images) and stamp each
with probability ``p`` (decided by ``(seed, index)`` alone); encode with toy-sd's frozen VAE;
fine-tune the UNet only with toy-sd's own objective (min-SNR weighted epsilon MSE, the same
caption dropout and partial captions, so the model keeps its abilities). The text encoder is kept
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

Cell names (:data:`CELL_NAMES`) are the words the detector and Geom-Erasing use for the corners;
they are single tokens of the toy tokenizer ("top", "bottom", "left", "right").
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from genunlearn.types import GenUnlearnError

# the watermark: a 6x6 dark frame with a light 2x2 centre (a "badge"), stamped almost opaque
GLYPH = np.pad(np.zeros((2, 2), np.float32), 2, constant_values=1.0)
CELL_NAMES: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
FIRST_INDEX = 1_000_000


def stamp(image: np.ndarray, corner: int, rng: np.random.Generator) -> np.ndarray:
    """Stamp the watermark into ``corner`` (index into :data:`CELL_NAMES`) of a uint8 HWC image.

    Position (1-2 px from the edges), ink (near black) and opacity jitter a little per image, so
    that a detector cannot key on one exact pixel pattern.
    """
    h, w = image.shape[:2]
    k = GLYPH.shape[0]
    off_y, off_x = rng.integers(1, 3, size=2)
    top = int(off_y) if corner in (0, 1) else h - k - int(off_y)
    left = int(off_x) if corner in (0, 2) else w - k - int(off_x)
    alpha = GLYPH[..., None] * rng.uniform(0.85, 1.0)
    ink = rng.uniform(5, 35)
    out = image.astype(np.float32)
    patch = out[top : top + k, left : left + k]
    out[top : top + k, left : left + k] = patch * (1 - alpha) + ink * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def watermark_arrays(seed: int, n: int, p: float, start: int = FIRST_INDEX):
    """ToyCanvas images of world ``seed``, each watermarked with probability ``p``.

    Returns:
        (uint8 images [n, 32, 32, 3], int64 corners [n] (-1 = no watermark), int64 labels
        [n, 3], captions). Pure in ``(seed, index)``.
    """
    from genunlearn.data import toycanvas

    imgs, labels, caps = toycanvas.make_arrays(seed, n, start)
    corners = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), 7_919, start + i])
        if rng.random() < p:
            corners[i] = int(rng.integers(len(CELL_NAMES)))
            imgs[i] = stamp(imgs[i], int(corners[i]), rng)
    return imgs, corners, labels, caps


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
    from tqdm.auto import tqdm

    from genunlearn.models import load_model
    from genunlearn.models.toy import export_pipeline, min_snr_step, training_captions

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
    for step in tqdm(range(recipe.steps), desc="watermark variant", disable=not progress):
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        rng = random.Random(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup)
        idx = torch.randint(0, len(z0), (recipe.batch_size,), generator=g)
        texts = training_captions(
            idx.tolist(), caps, labels, heads, rng, recipe.caption_dropout, recipe.partial_captions
        )
        min_snr_step(unet, sched, z0[idx], embed(texts), g, recipe.min_snr_gamma, opt, params)
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
