"""Run directories: ``config.json``, ``artifact.safetensors``, ``metrics.json``, sample PNGs.

A run directory is created with an ``INCOMPLETE`` marker that is removed only after everything
was written, so an interrupted run is never read as finished. Existing directories are never
reused unless the caller asks to overwrite, and then only if they are genunlearn runs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from genunlearn.types import ErasureResult, ErasureTask, GenUnlearnError

CONFIG = "config.json"
ARTIFACT = "artifact.safetensors"
ADDON = "addon.safetensors"  # a detachable module (e.g. an SPM adapter), when the method made one
METRICS = "metrics.json"
MARKER = "INCOMPLETE"
FAILED = "FAILED"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("genunlearn")
    except PackageNotFoundError:
        return "0+unknown"


def prepare_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Create a fresh run directory and mark it incomplete.

    Raises:
        GenUnlearnError: the directory exists and is not empty (unless ``overwrite`` and it is a
            genunlearn run), so nothing a user had is replaced.
    """
    d = Path(out_dir)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        is_run = (d / CONFIG).is_file() or (d / MARKER).is_file()
        if not overwrite:
            raise GenUnlearnError(
                f"run directory {d} already exists; choose a new out_dir or pass overwrite=True "
                "(CLI: --overwrite)"
            )
        if not is_run:
            raise GenUnlearnError(
                f"{d} exists and is not a genunlearn run directory; refusing to overwrite it"
            )
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return d


def mark_failed(d: Path, error: str) -> None:
    """Record why a run stopped (its ``INCOMPLETE`` marker stays, so it is never read as done)."""
    (d / FAILED).write_text(f"failed {time.strftime('%Y-%m-%d %H:%M:%S')}: {error}\n")


def write_run(
    d: Path,
    *,
    method: str,
    preset: str | None,
    config: dict[str, Any],
    task: ErasureTask,
    seed: int,
    model,
    result: ErasureResult,
    efficiency: dict[str, float],
) -> dict[str, Any]:
    """Write the artifact and config of a finished erase and clear the incomplete marker."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous() for k, v in result.changed.items()}
    save_file(tensors, str(d / ARTIFACT), metadata={"base_hash": model.base_hash})
    efficiency = {**efficiency, "storage_bytes": (d / ARTIFACT).stat().st_size}
    addon = None
    if result.addon is not None:
        efficiency["addon_bytes"] = write_addon(d, result.addon, model.base_hash)
        addon = {"file": ADDON, "kind": result.addon.kind}
    record = {
        "method": method,
        "preset": preset,
        "config": config,
        "task": task.to_dict(),
        "seed": seed,
        "base_model": model.model_id,
        "base_hash": model.base_hash,
        "inference": result.inference,
        "info": result.info,
        "changed_tensors": len(tensors),
        "addon": addon,
        "efficiency": efficiency,
        "genunlearn_version": version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (d / CONFIG).write_text(json.dumps(record, indent=1, default=str))
    return record


def finish(d: Path) -> None:
    """Mark a run directory complete."""
    (d / MARKER).unlink(missing_ok=True)


def read_record(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a complete run; clear errors for missing or interrupted runs."""
    d = Path(path)
    if not d.is_dir():
        raise GenUnlearnError(f"run directory {d} does not exist")
    if (d / FAILED).is_file():
        why = (d / FAILED).read_text().strip()
        raise GenUnlearnError(f"run {d} did not finish ({why}); re-run the erase")
    if (d / MARKER).is_file():
        raise GenUnlearnError(f"run {d} is incomplete (interrupted or failed); re-run the erase")
    if not (d / CONFIG).is_file():
        raise GenUnlearnError(f"{d} is not a genunlearn run directory ({CONFIG} is missing)")
    try:
        return json.loads((d / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise GenUnlearnError(f"{d / CONFIG} is corrupt: {e}") from None


def load_artifact(path: str | Path, base_hash: str) -> dict:
    """The changed tensors of a run, checked against the base model's hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    f = Path(path) / ARTIFACT
    if not f.is_file():
        raise GenUnlearnError(f"{f} is missing; the run directory is damaged")
    try:
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenUnlearnError(f"{f} is corrupt or not a safetensors file: {e}") from None
    if meta.get("base_hash") != base_hash:
        raise GenUnlearnError(
            f"{f} was made for a base model with hash {meta.get('base_hash', '?')[:12]}…, "
            f"but the model it is applied to has hash {base_hash[:12]}…; load the run's own base "
            "model"
        )
    return tensors


def write_addon(d: Path, addon, base_hash: str) -> int:
    """Save an add-on module as its own small safetensors file; returns its size in bytes."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous() for k, v in addon.tensors.items()}
    meta = {"base_hash": base_hash, "kind": addon.kind, "meta": json.dumps(addon.meta)}
    save_file(tensors, str(d / ADDON), metadata=meta)
    return (d / ADDON).stat().st_size


def load_addon(path: str | Path, base_hash: str):
    """The add-on module of a run (or an ``addon.safetensors`` file), checked against the base
    model's hash: an add-on made for another base model is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    from genunlearn.types import AddOn

    f = Path(path)
    f = f / ADDON if f.is_dir() else f
    if not f.is_file():
        raise GenUnlearnError(f"{f} is missing; this run holds no add-on module")
    try:
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(f))
        extra = json.loads(meta.get("meta", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenUnlearnError(f"{f} is corrupt or not an add-on file: {e}") from None
    if meta.get("base_hash") != base_hash:
        raise GenUnlearnError(
            f"add-on {f} was made for a base model with hash {meta.get('base_hash', '?')[:12]}…, "
            f"but the model it is applied to has hash {base_hash[:12]}…; apply it to its own base "
            "model"
        )
    return AddOn(meta.get("kind", "?"), tensors, extra)
