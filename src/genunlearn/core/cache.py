"""Cache of generated images, keyed by the weights that made them + prompt + seed + sampler.

Training-time methods (Concept Ablation's anchor set, Selective Amnesia's replay, SalUn's forget
set) generate the same base-model images again and again across runs of a benchmark; the cache
makes the second run free. The key is the model's :meth:`weights_fingerprint` (every parameter,
add-on, inference state and filter), not the hash of the files it was loaded from: a copy of an
already-edited model (``erase_sequence``, an erase of an erased model) keeps its base hash but
gets its own entries. A damaged or unreadable entry is regenerated, whatever the damage.
Location: ``$GENUNLEARN_CACHE`` or ``~/.cache/genunlearn/images``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def cache_dir() -> Path:
    root = os.environ.get("GENUNLEARN_CACHE") or Path.home() / ".cache" / "genunlearn"
    return Path(root) / "images"


def _key(model, weights: str, prompt: str, seed: int, steps, guidance) -> str:
    ident = {
        "weights": weights,
        "prompt": prompt,
        "seed": seed,
        "steps": steps or model.sampling["steps"],
        "guidance": guidance if guidance is not None else model.sampling["guidance"],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def read_entry(f: Path, valid) -> object | None:
    """The cache entry in ``f``, or None when it is missing or damaged in any way (unreadable, not
    plain tensors, or refused by ``valid(obj)``): the caller then recomputes it."""
    if not f.is_file():
        return None
    try:
        obj = torch.load(f, weights_only=True, map_location="cpu")  # whatever device wrote it
        return obj if valid(obj) else None
    except Exception:  # noqa: BLE001 - any damage at all: the entry is recomputed
        return None


def write_entry(obj, f: Path) -> None:
    """Write a cache entry atomically (a private temporary file, then a rename), so a reader or a
    concurrent writer never sees half a file."""
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, f)


def cached_sample(model, prompts: list[str], n: int, seed: int = 0, steps=None, guidance=None):
    """``model.sample(prompts, n, ...)`` through the cache (same images, same order)."""
    d = cache_dir()
    weights = model.weights_fingerprint()

    def valid(t) -> bool:
        return (
            torch.is_tensor(t)
            and t.dim() == 4
            and tuple(t.shape[:2]) == (n, 3)
            and bool(torch.isfinite(t).all())
        )

    def entry(p: str) -> Path:
        return d / f"{_key(model, weights, p, seed, steps, guidance)}_{n}.pt"

    out, missing = {}, []
    for p in dict.fromkeys(prompts):
        hit = read_entry(entry(p), valid)
        if hit is None:
            missing.append(p)
        else:
            out[p] = hit
    if missing:
        imgs = model.sample(missing, n=n, seed=seed, steps=steps, guidance=guidance)
        for i, p in enumerate(missing):
            out[p] = imgs[i * n : (i + 1) * n].clone()
            write_entry(out[p], entry(p))
    return torch.cat([out[p] for p in prompts])
