"""Time the UCE closed-form edit on SD-1.5's full-size UNet and text encoder (random weights).

Nothing is downloaded: the UNet and CLIP text encoder are built from SD-1.5's public configs by
``genunlearn.testbed.sd_configs`` with random weights, the tokenizer is the offline one, and a
reduced VAE stands in for SD's (UCE never touches it). The model is wrapped in the library's
``SDAdapter`` and the registered ``uce`` method edits it **in place** (``gu.erase`` would first
copy the 4 GB of weights, which is not part of the edit). The script prints the seconds of the
edit (text encoding of edit and preserve prompts + one float64 linear solve per edited
projection) and the process's peak memory.

Usage::

    nice -n 19 python experiments/uce_sd_shapes.py                 # 1 concept, 100 preserve prompts
    python experiments/uce_sd_shapes.py --concepts 10 --preserve 1000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sd_shapes import peak_rss_mib  # noqa: E402  (experiments/ is on sys.path when run as a script)


def build_adapter(seed: int):
    """An SDAdapter over SD-1.5-shaped UNet + text encoder (random weights) and a reduced VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    from genunlearn.models.sd import SDAdapter
    from genunlearn.testbed.sd_configs import (
        build_text_encoder,
        build_tokenizer_for,
        build_unet,
        scheduler_config,
        vae_config,
    )

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer_for(tmp)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_config("reduced")),
        text_encoder=build_text_encoder("sd15", tok, seed=seed),
        tokenizer=tok,
        unet=build_unet("sd15", seed=seed),
        scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return SDAdapter(pipe, "sd15-random", "random-sd15")


def main(argv: list[str] | None = None) -> None:
    from genunlearn import registry
    from genunlearn.config import build_config
    from genunlearn.types import ErasureTask

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concepts", type=int, default=1, help="concepts erased in one edit")
    ap.add_argument("--preserve", type=int, default=100, help="preserve prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device=cpu torch_threads={torch.get_num_threads()}")

    t0 = time.perf_counter()
    model = build_adapter(args.seed)
    print(f"build (random init, no download): {time.perf_counter() - t0:.1f} s")
    layers = model.cross_attention_layers()
    print(f"cross-attention layers: {len(layers)} -> {2 * len(layers)} K/V projections edited")

    # prompts from the offline tokenizer's words (their meaning is irrelevant to the cost)
    words = ["cat", "dog", "car", "tree", "house", "person", "church", "painting", "star"]
    targets = tuple(f"{w} in the style of van gogh {i}" for i, w in enumerate(words))[
        : args.concepts
    ]
    targets += tuple(f"red {i} painting" for i in range(args.concepts - len(targets)))
    keep = tuple(f"a photo of a {words[i % len(words)]} {i}" for i in range(args.preserve))
    task = ErasureTask(targets, anchor="art", retain=keep)
    entry = registry.get("method", "uce")
    cfg = build_config(entry.config, entry.presets["paper"], where="uce config")
    t = time.perf_counter()
    result = entry.fn(model, task, cfg)
    secs = time.perf_counter() - t
    print(f"concepts erased: {len(targets)}; preserve prompts: {len(keep)} (+ the empty prompt)")
    print(f"edited projections: {result.info['edited_projections']}")
    print(f"uce edit: {secs:.2f} s")
    rss = peak_rss_mib()
    print(f"peak RSS (VmHWM): {rss:.0f} MiB" if rss is not None else "peak RSS: unavailable")


if __name__ == "__main__":
    main()
