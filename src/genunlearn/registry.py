"""Registries of methods, attacks and metrics, with near-match errors for unknown names.

A method module calls ``register_method`` at import; :func:`load_builtin` imports every module of
the ``methods``, ``attacks`` and ``metrics`` packages once, so listing and lookup see them all.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genunlearn.types import Capability, GenUnlearnError, Needs


@dataclass(frozen=True)
class Entry:
    """One registered method, attack or metric."""

    name: str
    fn: Callable[..., Any]
    config: type | None = None
    requires: tuple[Capability, ...] = ()
    needs: tuple[Needs, ...] = ()
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: str = ""
    paper: str = ""
    modifies: str = ""  # regex over parameter names a method may change ("" = none)
    install: Callable[..., None] | None = None  # puts a saved run's inference-time part back


_REGISTRIES: dict[str, dict[str, Entry]] = {"method": {}, "attack": {}, "metric": {}}
_PACKAGES = {"method": "methods", "attack": "attacks", "metric": "metrics"}
_loaded = False


def _register(kind: str, name: str, **kw):
    def deco(fn):
        if name in _REGISTRIES[kind]:
            raise GenUnlearnError(f"{kind} {name!r} is registered twice")
        doc = importlib.import_module(fn.__module__).__doc__ or "" if kind != "metric" else ""
        doc = doc or fn.__doc__ or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        _REGISTRIES[kind][name] = Entry(name=name, fn=fn, summary=summary, **kw)
        return fn

    return deco


def register_method(
    name, *, config=None, requires=(), needs=(), presets=None, paper="", modifies="", install=None
):
    """Decorator registering ``erase(model, task, cfg) -> ErasureResult`` under ``name``.

    A method whose output acts at inference time (a negative prompt, attention processors, an
    output filter, an add-on module) keeps all of it in its own file: ``erase`` returns the
    JSON-friendly state (``ErasureResult.inference``) and the add-on (``ErasureResult.addon``),
    and ``install`` puts both back on a model, so that ``load_run`` rebuilds the erased model
    without knowing the method. The adapter offers the places to put them: ``inference`` (state,
    including the generic ``negative_prompt``), ``sampling_wrappers`` (context managers around
    each sampling loop, e.g. attention processors) and ``output_filters``.

    Args:
        name: registry key (== module file name).
        config: the frozen config dataclass (paper defaults).
        requires: capabilities the model must offer.
        needs: data the method needs beyond the target text.
        presets: preset name ("toy", "paper") -> config overrides.
        paper: the paper's address.
        modifies: regex over ``component.parameter`` names the method may change ("" = none);
            the contract tests hold every method to it.
        install: ``install(model, inference, addon)`` installs a run's inference state (a dict)
            and add-on (an :class:`~genunlearn.types.AddOn` or None) on ``model`` in place. None:
            ``model.apply_inference(inference)``, and a run with an add-on is refused.
    """
    return _register(
        "method", name, config=config, requires=tuple(requires), needs=tuple(needs),
        presets=presets or {}, paper=paper, modifies=modifies, install=install,
    )  # fmt: skip


def register_attack(name, *, config=None, requires=(), presets=None, paper=""):
    """Decorator registering ``attack(model, task, cfg, original=None) -> AttackResult``."""
    return _register(
        "attack", name, config=config, requires=tuple(requires), presets=presets or {}, paper=paper
    )


def register_metric(name, *, config=None, paper=""):
    """Decorator registering a metric family ``fn(model, task, cfg) -> dict[str, float]``."""
    return _register("metric", name, config=config, paper=paper)


def load_builtin() -> None:
    """Import every built-in method, attack and metric module (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in _PACKAGES.values():
        mod = importlib.import_module(f"genunlearn.{pkg}")
        for info in pkgutil.iter_modules(mod.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"genunlearn.{pkg}.{info.name}")


def names(kind: str) -> list[str]:
    """Sorted registered names of ``kind`` ("method", "attack", "metric")."""
    load_builtin()
    return sorted(_REGISTRIES[kind])


def get(kind: str, name: str) -> Entry:
    """Look up an entry; an unknown name raises an error listing the closest valid names."""
    load_builtin()
    reg = _REGISTRIES[kind]
    if name in reg:
        return reg[name]
    raise GenUnlearnError(unknown_name_message(kind, name, sorted(reg)))


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """'unknown X 'n'; did you mean …? valid: …' — the one wording for every unknown name."""
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}"
