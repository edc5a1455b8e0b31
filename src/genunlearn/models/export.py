"""Export an SD adapter as plain diffusers files: a pipeline directory, or one component's weights.

:func:`export_pipeline` writes what ``diffusers.StableDiffusionPipeline.from_pretrained`` loads
with no genunlearn installed: the pipeline's components through ``save_pretrained`` (safetensors),
including the pipeline's own scheduler config, the one genunlearn's sampler steps with, and
nothing of genunlearn's (no ``world.json``, no evaluator). With ``part="unet"`` or
``"text_encoder"`` it writes one flat safetensors file of that component's full state dict under
the module's own key names (``module.load_state_dict(safetensors.torch.load_file(f))``).

Weights are written in the model's dtype (:attr:`dtype`: float32, unless the model was loaded in
half precision). Tensors that a method trained in float32 on a half-precision model are cast to
it, as ``load_run`` does, so every file holds one dtype.

Whatever acts at inference time is not a weight: the adapter's inference state, its sampling
wrappers, output filters, attached add-ons, and attention processors that are not diffusers
classes. Plain diffusers would not apply any of them, so its images would silently differ.
:func:`inference_parts` names each one. An export refuses them unless ``allow_inference`` is
set; then it records them beside the weights: ``genunlearn_inference.json`` in the pipeline
directory, or the ``genunlearn_inference`` metadata entry of a component file.

Overwriting follows the rule of run directories (``runs.prepare_dir``). An export directory
carries an ownership marker, ``.genunlearn-export``, that lists the files genunlearn wrote.
``overwrite`` replaces only a directory with that marker, and only the files it lists. The new
export is first written to a temporary sibling directory, so a failure while writing leaves the
target as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from genunlearn.models.device import dtype_name
from genunlearn.types import GenUnlearnError

PARTS = ("pipeline", "unet", "text_encoder")
MARKER = ".genunlearn-export"  # ownership marker: only such directories may be replaced
NOTE = "genunlearn_inference.json"  # what an allow_inference export left out
NOTE_KEY = "genunlearn_inference"  # the same note in a component file's metadata


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genunlearn")
    except PackageNotFoundError:
        return "0+unknown"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def inference_parts(model) -> list[str]:
    """What of ``model`` acts at inference time and so cannot be written into weights.

    Returns one phrase per part, each saying what plain diffusers would not do. The list is
    empty when the weights alone give the model's images.
    """
    from genunlearn.models.addons import attached

    parts = []
    for key, value in sorted(getattr(model, "inference", {}).items()):
        if key == "negative_prompt":  # the sampler's own key (diffusers' argument name)
            if value:  # "" is the default negative prompt: nothing to apply
                parts.append(
                    f"its inference state sets a negative prompt {value!r}: plain diffusers "
                    f"would not apply it; pass negative_prompt={value!r} to the pipeline yourself"
                )
        else:
            parts.append(
                f"its inference state holds {key!r} = {_short(value)}, which only genunlearn's "
                "sampling hooks read"
            )
    for name, fn in sorted(getattr(model, "sampling_wrappers", {}).items()):
        where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        parts.append(
            f"its sampling wrapper {name!r} ({where}) changes every sampling loop (e.g. attention "
            "processors): plain diffusers would not run it"
        )
    for f in getattr(model, "output_filters", []):
        parts.append(
            f"its output filter {type(f).__name__} post-processes (and may block) every generated "
            "image: plain diffusers would not run it"
        )
    for addon in attached(model):
        modules = len({k.rsplit(".", 1)[0] for k in addon.tensors})
        prompts = list(addon.meta.get("prompts") or [])
        gate = f", its multiplier gated per prompt by {prompts}" if prompts else ""
        parts.append(
            f"its add-on {addon.kind!r} (a low-rank adapter on {modules} UNet modules{gate}) runs "
            "in forward hooks and is not part of the weights: plain diffusers would not apply it"
        )
    procs = getattr(model.denoiser, "attn_processors", {})
    custom = sorted(
        {
            type(p).__name__
            for p in procs.values()
            if type(p).__module__.split(".")[0] != "diffusers"
        }
    )
    if custom:
        parts.append(
            f"its UNet attention layers use processors that are not diffusers classes "
            f"({', '.join(custom)}): plain diffusers would load its default processors instead"
        )
    return parts


def _note(model, parts: list[str], source: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON note an ``allow_inference`` export writes beside the weights."""
    from genunlearn.models.addons import attached

    return {
        "what": "parts of the erased model that act at inference time in genunlearn and are NOT "
        "in the exported weights; plain diffusers applies none of them",
        "left_out": parts,
        "inference": dict(getattr(model, "inference", {})),
        "sampling_wrappers": sorted(getattr(model, "sampling_wrappers", {})),
        "output_filters": [type(f).__name__ for f in getattr(model, "output_filters", [])],
        "addons": [
            {"kind": a.kind, "meta": a.meta, "tensors": len(a.tensors)} for a in attached(model)
        ],
        "source": source or {},
        "genunlearn_version": _version(),
    }


def _subject(model, source: dict[str, Any] | None) -> str:
    source = source or {}
    if source.get("run"):
        return f"run {source['run']}"
    if source.get("method"):
        return f"the {source['method']} erasure of {model.model_id}"
    return f"model {model.model_id}"


def _check_changed(subject: str, part: str, changed: Iterable[str]) -> None:
    """Refuse a component file that would hold none of the erasure's changes; warn when the
    erasure also changed other components, which the file leaves out."""
    comps = sorted({n.split(".", 1)[0] for n in changed})
    flag = {"unet": "--unet-only", "text_encoder": "--text-encoder-only"}
    if part not in comps:
        did = f"changed only {', '.join(comps)} weights" if comps else "changed no weights"
        alt = [c for c in comps if c in flag]
        hint = f", or part={alt[0]!r} (CLI: {flag[alt[0]]})" if alt else ""
        raise GenUnlearnError(
            f"{subject} {did}: a {part} file would hold the base model's {part} unchanged; "
            f"export the whole pipeline{hint}"
        )
    others = [c for c in comps if c != part]
    if others:
        warnings.warn(
            f"{subject} also changed {', '.join(others)} weights, which a {part} file leaves out: "
            "export the whole pipeline, or one file per changed component",
            stacklevel=3,
        )


def export_pipeline(
    model,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    part: str = "pipeline",
    allow_inference: bool = False,
    changed: Iterable[str] | None = None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as plain diffusers files that load without genunlearn.

    Args:
        model: an SD adapter (e.g. ``run.model``).
        out_dir: the pipeline directory (``part="pipeline"``), else the ``.safetensors`` file.
        overwrite: replace an earlier export: a directory only if genunlearn marked it as its own
            export, and then only the files it wrote; a component file, if it exists.
        part: "pipeline" (a ``save_pretrained`` directory), "unet" or "text_encoder" (one flat
            safetensors file of that component's full state dict).
        allow_inference: write the weights even though the model has inference-time parts (see
            :func:`inference_parts`); they are left out and listed in ``genunlearn_inference.json``
            (pipeline) or in the file's ``genunlearn_inference`` metadata.
        changed: names (``component.parameter``) of the parameters the erasure changed, when
            known: a component file that would hold none of them is refused.
        source: where the model came from (e.g. ``{"method": ..., "run": ...}``), recorded in the
            marker, the note and the file metadata.

    Returns:
        The directory or file written.

    Raises:
        GenUnlearnError: an unknown part; a target that exists (see ``overwrite``) or is of the
            wrong kind; inference-time parts without ``allow_inference``; a component file that
            would hold no change.
    """
    if part not in PARTS:
        raise GenUnlearnError(f"export part must be one of {', '.join(PARTS)}, got {part!r}")
    if getattr(model, "pipe", None) is None or not hasattr(model.pipe, "save_pretrained"):
        raise GenUnlearnError(
            f"model {model.model_id} is not a diffusers pipeline; export writes Stable Diffusion "
            "pipelines (SDAdapter) only"
        )
    out = Path(os.path.abspath(Path(out_dir).expanduser()))  # "." gets a parent; links stay
    if part == "pipeline":  # checked before any work: nothing is written if refused
        old = _claim_dir(out, overwrite)
    else:
        _check_file(out, part, overwrite)
    subject = _subject(model, source)
    parts = inference_parts(model)
    if parts and not allow_inference:
        where = NOTE if part == "pipeline" else f"the file's {NOTE_KEY!r} metadata"
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(parts, 1))
        raise GenUnlearnError(
            f"{subject} cannot be exported as plain diffusers weights without changing what it "
            f"generates: {listed}; or pass allow_inference=True (CLI: --allow-inference) to write "
            f"the weights only, with these parts listed in {where}"
        )
    if part != "pipeline" and changed is not None:
        _check_changed(subject, part, changed)
    note = _note(model, parts, source) if parts else None
    info = {
        "part": part,
        "dtype": dtype_name(model.dtype),
        "base_model": str(model.model_id),
        "base_hash": model.base_hash,
        "prediction_type": getattr(model, "prediction_type", "epsilon"),
        "sampling": dict(getattr(model, "sampling", {})),
        "source": source or {},
        "version": _version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if part == "pipeline":
        return _write_pipeline(model, out, old, note, info)
    module = model.denoiser if part == "unet" else model.text_encoder
    return _write_component(module, out, model.dtype, note, info)


# ----------------------------------------------------------------------------- component files
def _check_file(out: Path, part: str, overwrite: bool) -> None:
    if out.suffix != ".safetensors":
        raise GenUnlearnError(
            f"a {part} export is one file: give a path ending in .safetensors, got {out}"
        )
    if out.is_dir():
        raise GenUnlearnError(f"{out} is a directory; give a .safetensors file path")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise GenUnlearnError(
            f"{out} already exists; choose a new file or pass overwrite=True (CLI: --overwrite)"
        )


def _state_tensors(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The module's state dict on the CPU, floating tensors in ``dtype``, no shared storage."""
    out, seen = {}, set()
    for k, v in module.state_dict().items():
        t = v.detach()
        if t.is_floating_point() and t.dtype != dtype:
            t = t.to(dtype)
        t = t.cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # tied weights: safetensors refuses shared storage
            t = t.clone()
        seen.add(ptr)
        out[k] = t
    return out


def _write_component(module, out: Path, dtype, note, info) -> Path:
    from safetensors.torch import save_file

    meta = {"format": "pt", "component": info["part"], "key_scheme": "diffusers"}
    meta |= {"partial": "false", "genunlearn_export": json.dumps(info, default=str)}
    meta |= {k: str(info[k]) for k in ("dtype", "base_model", "base_hash", "prediction_type")}
    if note is not None:
        meta[NOTE_KEY] = json.dumps(note, default=str)
    tensors = _state_tensors(module, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, out)  # the old file (if any) is replaced in one step
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------- pipeline dirs
def read_marker(d: str | Path) -> dict[str, Any] | None:
    """The ownership marker of an export directory, or None if ``d`` is not one (no marker, a
    damaged one, or one that lists a path outside ``d``)."""
    m = Path(d) / MARKER
    if not m.is_file() or m.is_symlink():
        return None
    try:
        rec = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("genunlearn_export") is not True:
        return None
    files = rec.get("files")
    if not isinstance(files, list) or not all(_inside(f) for f in files):
        return None
    return rec


def _inside(rel) -> bool:
    """A relative path that stays inside its directory and is not the marker."""
    p = Path(rel) if isinstance(rel, str) else None
    return p is not None and not p.is_absolute() and ".." not in p.parts and rel != MARKER


def is_export_dir(d: str | Path) -> bool:
    """True if genunlearn wrote ``d`` as an export directory (it holds a valid marker)."""
    return not Path(d).is_symlink() and read_marker(d) is not None


def _claim_dir(d: Path, overwrite: bool) -> list[str]:
    """Check that ``d`` may receive an export; returns the files an earlier export wrote there."""
    if d.exists() and not d.is_dir():
        raise GenUnlearnError(f"export directory {d} exists and is a file; choose a new out_dir")
    if not d.exists() or not any(d.iterdir()):
        return []
    if not overwrite:
        raise GenUnlearnError(
            f"export directory {d} already exists and is not empty; choose a new out_dir or pass "
            "overwrite=True (CLI: --overwrite)"
        )
    if not is_export_dir(d):
        raise GenUnlearnError(
            f"{d} is not a genunlearn export directory (it has no {MARKER} marker); refusing to "
            "overwrite it: choose a new out_dir"
        )
    return list(read_marker(d)["files"])


def _files_under(d: Path) -> set[str]:
    """Relative paths of every file (and link) under ``d``, not following links."""
    out = set()
    for root, dirs, files in os.walk(d):
        base = Path(root)
        links = [x for x in dirs if (base / x).is_symlink()]  # os.walk lists them as dirs
        out |= {str((base / f).relative_to(d)) for f in [*files, *links]}
    return out


def _write_marker(d: Path, info: dict[str, Any], files, complete: bool) -> None:
    rec = {"genunlearn_export": True, "complete": complete, **info, "files": sorted(files)}
    tmp = d / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    os.replace(tmp, d / MARKER)


@contextlib.contextmanager
def _quiet():
    """No "Writing model shards" bar from transformers during save_pretrained."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _cast_files(d: Path, dtype: torch.dtype) -> None:
    """Give every safetensors file under ``d`` one floating dtype (trained float32 tensors on a
    half-precision model), and its config the same dtype."""
    from safetensors.torch import load_file, safe_open, save_file

    for f in sorted(d.rglob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(f))
        if all(t.dtype == dtype for t in tensors.values() if t.is_floating_point()):
            continue
        tensors = {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}
        save_file(tensors, str(f), metadata=meta)
        cfg = f.parent / "config.json"
        if cfg.is_file():
            c = json.loads(cfg.read_text())
            for key in ("dtype", "torch_dtype"):
                if key in c:
                    c[key] = dtype_name(dtype)
            cfg.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def _write_pipeline(model, d: Path, old: list[str], note, info: dict[str, Any]) -> Path:
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", suffix=".genunlearn-tmp", dir=d.parent))
    try:
        with _quiet():
            model.pipe.save_pretrained(tmp, safe_serialization=True)
        _cast_files(tmp, model.dtype)
        if note is not None:
            (tmp / NOTE).write_text(json.dumps(note, indent=1, default=str) + "\n")
        new = sorted(_files_under(tmp))
        _swap_in(tmp, d, old, new, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def _swap_in(tmp: Path, d: Path, old: list[str], new: list[str], info: dict[str, Any]) -> None:
    """Replace the files of the earlier export (``old``) in ``d`` by those written in ``tmp``;
    every other file in ``d`` stays, and none of them is ever replaced."""
    d.mkdir(parents=True, exist_ok=True)
    root = d.resolve()
    user = _files_under(d) - set(old) - {MARKER, f"{MARKER}.tmp"}
    for rel in new:
        if rel in user:
            raise GenUnlearnError(
                f"{d / rel} was not written by genunlearn, and the export would replace it; move "
                "it away or choose a new out_dir"
            )
        if not (d / rel).parent.resolve().is_relative_to(root):
            raise GenUnlearnError(
                f"{(d / rel).parent} leads outside {d} (a link); refusing to write through it"
            )
    # until the swap is done, the marker claims both sets (a re-export can clean up either)
    _write_marker(d, info, set(old) | set(new), complete=False)
    for rel in old:
        p = d / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
    for rel in new:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, d / rel)
    dirs = {p for rel in old for p in (d / rel).parents if p != d and d in p.parents}
    for p in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()  # emptied by removing the earlier export's files
    _write_marker(d, info, new, complete=True)
