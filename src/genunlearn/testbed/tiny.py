"""A random-weight toy-sd in seconds: the fixture of the contract and pipeline tests.

:func:`build_random_testbed` writes a directory with exactly the structure of a trained toy
pipeline (``testbed.toy_sd``): a ``diffusers.StableDiffusionPipeline`` of toy-sd's component
configs (SD's module names, ``...attn2.to_k`` and so on), toy-sd's offline CLIP tokenizer over
the ToyCanvas words, a ``world.json`` of the ToyCanvas world and an ``evaluator/``, so that
``gu.load_model(path)`` loads it like toy-sd. Nothing is trained: every weight is a seeded random
initialisation (the VAE's ``scaling_factor`` alone is measured, on a few renders, as the recipe
does), and the sampler default is 2 DDIM steps. Tests on it check mechanics, never quality.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from genunlearn.types import GenUnlearnError

#: sampler defaults written into the fixture's world.json (fast tests)
FAST_SAMPLING = {"steps": 2, "guidance": 3.0}


def toycanvas_words() -> list[str]:
    """The words the toy tokenizer must keep whole: every caption word, label word and kind."""
    from genunlearn.data import toycanvas

    captions = {toycanvas.caption(*t) for t in toycanvas.all_triples()}
    words = sorted({w for c in captions for w in c.lower().split()})
    words += sorted({w for v in toycanvas.KINDS.values() for lab in v for w in lab.lower().split()})
    return words + list(toycanvas.KINDS)


def build_random_testbed(
    out_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """Write a random-weight toy pipeline with its world and evaluator into ``out_dir``.

    Deterministic for ``seed`` (the global torch RNG is left untouched).

    Args:
        out_dir: a new (absent or empty) directory.
        seed: seed of every random initialisation.
        prediction_type: the scheduler's (and so the UNet's) output: "epsilon" (toy-sd, SD-1.x)
            or "v_prediction" (SD-2.x), for tests of the v-prediction path with a world.

    Returns:
        ``out_dir`` as a Path; load it with ``gu.load_model``.

    Raises:
        GenUnlearnError: ``out_dir`` exists and is not empty.
    """
    from diffusers import AutoencoderKL, DDIMScheduler

    from genunlearn.data import toycanvas
    from genunlearn.models.evaluator import Evaluator
    from genunlearn.testbed.tokenizer import build_tokenizer
    from genunlearn.testbed.toy_sd import (
        TOY_MAX_TOKENS,
        build_pipeline,
        export_pipeline,
        vae_config,
    )

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenUnlearnError(f"{out} is not empty; the random testbed needs a new directory")
    heads = {k: list(v) for k, v in toycanvas.KINDS.items()}
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        tok = build_tokenizer(toycanvas_words(), Path(tmp) / "tokenizer", max_length=TOY_MAX_TOKENS)
        # the recipe's initialisation order: the VAE from the seed, then build_pipeline re-seeds
        # and draws the text encoder and the UNet
        torch.manual_seed(seed)
        pipe = build_pipeline(tok, seed=seed, vae=AutoencoderKL(**vae_config()))
        if prediction_type != "epsilon":
            pipe.register_modules(
                scheduler=DDIMScheduler.from_config(
                    pipe.scheduler.config, prediction_type=prediction_type
                )
            )
        torch.manual_seed(seed + 1)
        Evaluator(heads).eval().save(Path(tmp) / "evaluator")
        # the recipe scales latents to unit variance; measure that scale on a few renders
        imgs, _, _ = toycanvas.make_arrays(seed, 64)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            lat = pipe.vae.encode(x).latent_dist.mean
        pipe.vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
        pipe.vae.eval()
        export_pipeline(pipe, out, Path(tmp) / "evaluator", heads, None)
    world = json.loads((out / "world.json").read_text())
    world["sampling"] = dict(FAST_SAMPLING)
    (out / "world.json").write_text(json.dumps(world, indent=1))
    return out
