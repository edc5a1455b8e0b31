"""Pipeline directories on disk: what makes one a Stable Diffusion pipeline, the hash of its
weight files, and quiet loading (split out of ``sd.py``, which holds the adapter itself)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from genunlearn.types import GenUnlearnError

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_HASHES: dict[tuple, str] = {}


def check_directory(path: Path) -> None:
    """Raise a clear error unless ``path`` is a diffusers SD pipeline directory."""
    if not path.is_dir():
        raise GenUnlearnError(f"model {str(path)!r}: no such directory (or use 'toy-sd')")
    index = path / "model_index.json"
    if not index.is_file():
        raise GenUnlearnError(
            f"{path} is not a diffusers pipeline directory: model_index.json is missing "
            f"(expected a StableDiffusionPipeline saved with save_pretrained, with {', '.join(REQUIRED)})"
        )
    try:
        listed = json.loads(index.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise GenUnlearnError(
            f"{index} is not valid JSON ({e}); the pipeline directory is damaged"
        ) from None
    if not isinstance(listed, dict):
        raise GenUnlearnError(
            f"{index} must hold a JSON object naming the pipeline components, got {type(listed).__name__}"
        )
    for comp in REQUIRED:
        if comp not in listed or not (path / comp).is_dir():
            raise GenUnlearnError(
                f"{path} is not a Stable Diffusion pipeline: component {comp!r} is missing "
                f"(needs {', '.join(REQUIRED)})"
            )


def directory_hash(path: Path) -> str:
    """sha256 over the weight files of a pipeline directory (cached per size and mtime)."""
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix in {".safetensors", ".bin", ".json", ".txt"} and p.is_file()
    )
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASHES:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(path)).encode())
            with p.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def quiet_loading() -> None:
    """No per-component loading bars from diffusers / transformers (our own bars are enough)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
