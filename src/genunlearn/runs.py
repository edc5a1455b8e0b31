"""Run directories: ``config.json``, ``artifact.safetensors``, ``metrics.json``, sample PNGs.

A run directory is created with an ``INCOMPLETE`` marker that is removed only after everything
was written, so an interrupted run is never read as finished, and with an ownership marker
(``.genunlearn-run``) that says genunlearn made it. Existing directories are never reused unless
the caller asks to overwrite, and then only if they carry that marker; even then only the files
genunlearn writes into a run are removed, never anything else a user put there.

Every artifact file's sha256 is recorded in ``config.json``; :func:`load_artifact` and
:func:`load_addon` refuse a file whose bytes no longer match.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from genunlearn.models.base import tensors_digest
from genunlearn.types import ErasureResult, ErasureTask, GenUnlearnError

CONFIG = "config.json"
ARTIFACT = "artifact.safetensors"
ADDON = "addon.safetensors"  # a detachable module (e.g. an SPM adapter), when the method made one
METRICS = "metrics.json"
MARKER = "INCOMPLETE"
FAILED = "FAILED"
OWNER = ".genunlearn-run"  # written by prepare_dir: only such directories may be replaced
SAMPLES = "samples.png"
#: what genunlearn itself writes into a run directory: the only names overwrite may remove
OWN_FILES = (CONFIG, ARTIFACT, ADDON, METRICS, MARKER, FAILED, OWNER, SAMPLES, "attack_*.png")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("genunlearn")
    except PackageNotFoundError:
        return "0+unknown"


def is_run_dir(d: Path) -> bool:
    """True if genunlearn created ``d`` as a run directory (it holds the ownership marker)."""
    marker = d / OWNER
    if not marker.is_file() or marker.is_symlink():
        return False
    try:
        return json.loads(marker.read_text()).get("genunlearn_run") is True
    except (OSError, ValueError, AttributeError):
        return False


def _own_files(d: Path) -> list[Path]:
    return [
        p
        for p in d.iterdir()
        if (p.is_file() or p.is_symlink()) and any(fnmatch.fnmatch(p.name, g) for g in OWN_FILES)
    ]


def prepare_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Create a fresh run directory, mark it as genunlearn's own and as incomplete.

    With ``overwrite``, an existing directory is reused only if genunlearn marked it as a run;
    then only the files genunlearn writes into runs (:data:`OWN_FILES`) are removed: anything
    else in it stays.

    Raises:
        GenUnlearnError: the path is a file; or the directory exists and is not empty and either
            ``overwrite`` is off or the directory is not a genunlearn run.
    """
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise GenUnlearnError(f"run directory {d} exists and is a file; choose a new out_dir")
    if d.exists() and any(d.iterdir()):
        if not overwrite:
            raise GenUnlearnError(
                f"run directory {d} already exists; choose a new out_dir or pass overwrite=True "
                "(CLI: --overwrite)"
            )
        if d.is_symlink() or not is_run_dir(d):
            raise GenUnlearnError(
                f"{d} exists and is not a genunlearn run directory (it has no {OWNER} marker); "
                "refusing to overwrite it: choose a new out_dir"
            )
        for f in _own_files(d):
            f.unlink()
    d.mkdir(parents=True, exist_ok=True)
    (d / OWNER).write_text(json.dumps({"genunlearn_run": True, "version": version()}) + "\n")
    (d / MARKER).write_text(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return d


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(f: Path, file_sha: str | None, meta: dict[str, str], tensors: dict) -> None:
    """Refuse an artifact whose bytes changed after it was written."""
    changed = GenUnlearnError(
        f"{f} does not match the digest recorded when it was written (the file was changed or "
        "damaged afterwards); refusing to load it: re-run the erase"
    )
    if file_sha is not None and file_digest(f) != file_sha:
        raise changed
    if "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:
        raise changed
    if file_sha is None and "tensors_sha256" not in meta:
        import warnings

        warnings.warn(f"{f} carries no digest (an older run); it cannot be verified", stacklevel=3)


def check_finite(tensors: dict[str, Any], what: str) -> None:
    """Raise if any tensor holds NaN or infinity (a diverged method must never be saved as a run).

    Args:
        tensors: name -> tensor.
        what: what the tensors are, for the message (e.g. "esd's changed weights").
    """
    import torch

    bad = [k for k, v in tensors.items() if torch.is_tensor(v) and not torch.isfinite(v).all()]
    if bad:
        raise GenUnlearnError(
            f"{what} hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); the "
            "method diverged and its result is not saved: lower the learning rate or the steps"
        )


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
    meta = {"base_hash": model.base_hash, "tensors_sha256": tensors_digest(tensors)}
    save_file(tensors, str(d / ARTIFACT), metadata=meta)
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
        # what the erase ran on (load_run loads the base in the same dtype unless told otherwise)
        "device": str(getattr(model, "device", "cpu")),
        "dtype": str(getattr(model, "dtype", "torch.float32")).removeprefix("torch."),
        "memory": dict(getattr(model, "memory", {})),
        "inference": result.inference,
        "info": result.info,
        "changed_tensors": len(tensors),
        "addon": addon,
        "efficiency": efficiency,
        "genunlearn_version": version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    digests = {ARTIFACT: file_digest(d / ARTIFACT)}
    if addon is not None:
        digests[ADDON] = file_digest(d / ADDON)
    record["sha256"] = digests
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
        rec = json.loads((d / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenUnlearnError(f"{d / CONFIG} is corrupt: {e}") from None
    missing = [k for k in RECORD_KEYS if not isinstance(rec, dict) or k not in rec]
    if missing:
        raise GenUnlearnError(
            f"{d / CONFIG} is not a genunlearn run record (missing {', '.join(missing)}); "
            "re-run the erase"
        )
    bad = _record_type_error(rec)
    if bad:
        raise GenUnlearnError(f"{d / CONFIG} is malformed: {bad}; re-run the erase")
    return rec


#: keys every run record has (``read_record`` refuses a config.json without them)
RECORD_KEYS = ("method", "config", "task", "seed", "base_model", "base_hash")


def _record_type_error(rec: dict[str, Any]) -> str | None:
    if not isinstance(rec["method"], str):
        return "'method' must be text"
    if not isinstance(rec["base_model"], str) or not isinstance(rec["base_hash"], str):
        return "'base_model' and 'base_hash' must be text"
    if not isinstance(rec["task"], dict) or "target" not in rec["task"]:
        return "'task' must be a mapping with a 'target'"
    if not isinstance(rec.get("inference") or {}, dict):
        return "'inference' must be a mapping"
    if not isinstance(rec.get("sha256") or {}, dict):
        return "'sha256' must be a mapping"
    return None


def load_artifact(path: str | Path, base_hash: str, digest: str | None = None) -> dict:
    """The changed tensors of a run, checked against the base model's hash and, when given, the
    sha256 recorded for the file (``read_record(path)["sha256"]["artifact.safetensors"]``)."""
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
    _verify(f, digest, meta, tensors)
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
    meta["tensors_sha256"] = tensors_digest(tensors)
    save_file(tensors, str(d / ADDON), metadata=meta)
    return (d / ADDON).stat().st_size


def load_addon(path: str | Path, base_hash: str, digest: str | None = None):
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
    _verify(f, digest, meta, tensors)
    if meta.get("base_hash") != base_hash:
        raise GenUnlearnError(
            f"add-on {f} was made for a base model with hash {meta.get('base_hash', '?')[:12]}…, "
            f"but the model it is applied to has hash {base_hash[:12]}…; apply it to its own base "
            "model"
        )
    return AddOn(meta.get("kind", "?"), tensors, extra)
