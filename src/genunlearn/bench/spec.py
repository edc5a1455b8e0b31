"""Benchmark specs: a YAML grid of models x methods (with overrides) x concepts x seeds x attacks.

```yaml
name: smoke
models: [toy-sd]
methods:
  - original
  - {name: negative_prompt}
  - {name: esd, preset: toy, overrides: {steps: 20}, label: esd-short}
concepts: [star, striped]        # or {kind: style, n: 3} for the first n of a kind
seeds: [0]
attacks: [no_attack]             # optional
eval: {protocol: unlearncanvas, n_per_prompt: 2}
attack_config: {n_prompts: 10, seed_search: {n_seeds: 4}}   # shared keys + per-attack sections
sequential: [striped, dotted, star]   # optional: also erase these in turn (one cell per
                                      # model x method x seed; see genunlearn.bench.sequential)
device: cuda                     # optional: where every model is loaded (default: first GPU)
dtype: bfloat16                  # optional: the models' weight dtype (default: float32)
```
Unknown keys are errors, and so are unknown ``eval`` keys (checked here against the metric's
config); method overrides and ``attack_config`` are checked against their configs by the runner
before any cell runs. ``methods`` and ``attacks`` are lists, or ``all`` for every registered one
(a bare name is an error: ``methods: uce`` is not the methods "u", "c", "e"); ``models``,
``concepts`` and ``seeds`` may also be a single value. ``concepts`` may be left out when
``sequential`` is given.

Cell ids name the cell's run directory (``OUT/runs/<id>``) and key its rows in results.jsonl: a
part made only of ``A-Z a-z 0-9 . _ + -`` (after a model's ``/`` and a concept's spaces became
``_``, as always) is kept as it is, so existing result directories resume; any other part is
slugged to those characters, shortened, and given a hash of its raw text, so an id is always a
single safe file name and distinct texts keep distinct ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genunlearn import registry
from genunlearn.config import MAX_SEED, build_config, is_seed, load_yaml
from genunlearn.types import GenUnlearnError

KEYS = {
    "name", "models", "methods", "concepts", "seeds", "attacks", "eval", "attack_config",
    "sequential", "device", "dtype",
}  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
# longest kept part of an id; with the separators and a 19-digit seed an id stays far below the
# 255-byte file-name limit of common filesystems
_MODEL_LEN, _METHOD_LEN, _CONCEPT_LEN, _SEQUENCE_LEN = 40, 48, 64, 100


def safe_part(text: str, raw: str, limit: int, keep_tail: bool = False) -> str:
    """``text`` as a piece of a file name: kept when it is made of safe characters and fits in
    ``limit``; else slugged, cut (from the front when ``keep_tail``) and suffixed with a hash of
    ``raw`` (the user's text), so different raw texts give different parts."""
    slug = _UNSAFE.sub("_", text)
    if slug == text and 0 < len(slug) <= limit and slug.strip("."):
        return slug
    digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    room = limit - len(digest) - 1
    slug = slug[-room:] if keep_tail else slug[:room]
    return f"{slug}-{digest}" if slug.strip("._") else digest


@dataclass(frozen=True)
class MethodSpec:
    name: str
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        if not self.overrides and not self.preset:
            return self.name
        h = hashlib.sha1(json.dumps([self.preset, self.overrides], sort_keys=True).encode())
        return f"{self.name}-{h.hexdigest()[:6]}"


@dataclass(frozen=True)
class Cell:
    model: str
    method: MethodSpec
    concept: str
    seed: int
    sequence: tuple[str, ...] = ()  # a sequential-unlearning cell erases these in turn

    @property
    def id(self) -> str:
        """A single safe file name (see the module docstring); readable for ordinary names."""
        model = safe_part(
            self.model.replace("/", "_").strip("_"), self.model, _MODEL_LEN, keep_tail=True
        )
        method = safe_part(self.method.key, self.method.key, _METHOD_LEN)
        if self.sequence:
            text = "seq-" + "+".join(c.replace(" ", "_") for c in self.sequence)
            what = safe_part(text, json.dumps(list(self.sequence)), _SEQUENCE_LEN)
        else:
            what = safe_part(self.concept.replace(" ", "_"), self.concept, _CONCEPT_LEN)
        return f"{model}__{method}__{what}__s{int(self.seed)}"

    @property
    def legacy_id(self) -> str:
        """The id genunlearn gave this cell before ids were made safe; only ever looked up in an
        existing results.jsonl (never used as a path), so older result directories resume."""
        safe = self.model.replace("/", "_").strip("_")[-40:]
        what = self.concept.replace(" ", "_")
        if self.sequence:
            what = "seq-" + "+".join(c.replace(" ", "_") for c in self.sequence)
        return f"{safe}__{self.method.key}__{what}__s{self.seed}"


@dataclass(frozen=True)
class Spec:
    name: str
    models: list[str]
    methods: list[MethodSpec]
    concepts: list[Any]
    seeds: list[int]
    attacks: list[str]
    eval: dict[str, Any]
    attack_config: dict[str, Any]
    raw: dict[str, Any]
    sequential: list[Any] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None


def _method(m) -> MethodSpec:
    if isinstance(m, str):
        return MethodSpec(m)
    if isinstance(m, dict):
        bad = set(m) - {"name", "preset", "overrides", "label"}
        if bad or "name" not in m:
            raise GenUnlearnError(
                f"method entry {m!r}: needs 'name'; allowed keys: name, preset, overrides, label"
            )
        overrides = m.get("overrides") or {}
        if not isinstance(m["name"], str):
            raise GenUnlearnError(f"method entry {m!r}: 'name' must be a method name")
        if m.get("preset") is not None and not isinstance(m["preset"], str):
            raise GenUnlearnError(f"method entry {m!r}: 'preset' must be a preset name")
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise GenUnlearnError(
                f"method entry {m!r}: 'overrides' must be a mapping of config keys to values"
            )
        if not isinstance(m.get("label", ""), str):
            raise GenUnlearnError(f"method entry {m!r}: 'label' must be text")
        return MethodSpec(m["name"], m.get("preset"), dict(overrides), m.get("label", ""))
    raise GenUnlearnError(f"method entry {m!r} must be a name or a mapping")


def _names_or_all(raw: dict, key: str, kind: str) -> list[Any]:
    """``key``'s list, or every registered ``kind`` for ``all``; a bare name is an error."""
    value = raw.get(key)
    if value is None:
        return []
    if value == "all":
        return registry.names(kind)
    if not isinstance(value, list):
        raise GenUnlearnError(
            f"benchmark spec: '{key}' must be a list (e.g. {key}: [{value}]) or 'all', "
            f"got {value!r}"
        )
    return value


def _seeds(value) -> list[int]:
    seeds = [0] if value is None or value == [] else value
    seeds = seeds if isinstance(seeds, list) else [seeds]
    for s in seeds:
        if not is_seed(s):
            raise GenUnlearnError(
                f"benchmark spec: 'seeds' must be integers in 0 .. 2**63-1 ({MAX_SEED}), got {s!r}"
            )
    if len(set(seeds)) != len(seeds):
        raise GenUnlearnError(f"benchmark spec: 'seeds' repeat in {seeds}")
    return list(seeds)


def _models(value) -> list[str]:
    models = ["toy-sd"] if value is None or value == [] else value
    models = models if isinstance(models, list) else [models]
    for m in models:
        if not isinstance(m, str) or not m.strip():
            raise GenUnlearnError(
                f"benchmark spec: 'models' must be model names or paths, got {m!r}"
            )
    if len(set(models)) != len(models):
        raise GenUnlearnError(f"benchmark spec: 'models' repeat in {models}")
    return list(models)


def _mapping(raw: dict, key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GenUnlearnError(f"benchmark spec: '{key}' must be a mapping, got {value!r}")
    return dict(value)


def _check_eval(ev: dict[str, Any], sequential: bool) -> None:
    """``eval`` keys and values against the protocol's config (and the sequential one's)."""
    protocol = ev.get("protocol", "unlearncanvas")
    if not isinstance(protocol, str):
        raise GenUnlearnError(f"benchmark spec: eval protocol must be a name, got {protocol!r}")
    entry = registry.get("metric", protocol)
    settings = {k: v for k, v in ev.items() if k != "protocol"}
    if entry.config is not None:
        build_config(entry.config, settings, where=f"benchmark spec eval ({protocol})")
    if sequential:
        from genunlearn.metrics.concept_accuracy import UnlearnCanvasConfig

        seq = {k: v for k, v in settings.items() if k != "fid"}
        build_config(UnlearnCanvasConfig, seq, where="benchmark spec eval (sequential cells)")


def parse_spec(spec: str | Path | dict) -> Spec:
    """Validate a spec (YAML path or dict); names are checked against the registries.

    Raises:
        GenUnlearnError: an unknown key, name or ``eval`` setting, or a value of the wrong shape
            (naming the key and what is valid).
    """
    raw = load_yaml(spec) if isinstance(spec, (str, Path)) else dict(spec)
    bad = set(raw) - KEYS
    if bad:
        raise GenUnlearnError(f"benchmark spec: unknown keys {sorted(bad)}; valid: {sorted(KEYS)}")
    seq = raw.get("sequential") or []
    if not isinstance(seq, list):
        raise GenUnlearnError(
            "benchmark spec: 'sequential' must be a list of concepts (names or {kind: K, n: N})"
        )
    for k in ("methods", "concepts"):
        if not raw.get(k) and not (k == "concepts" and seq):
            raise GenUnlearnError(f"benchmark spec: '{k}' is required and must not be empty")
    methods = [_method(m) for m in _names_or_all(raw, "methods", "method")]
    for m in methods:
        registry.get("method", m.name)
    keys = [m.key for m in methods]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise GenUnlearnError(
            f"benchmark spec: methods {dup} are listed twice; give each variant its own 'label'"
        )
    attacks = _names_or_all(raw, "attacks", "attack")
    for a in attacks:
        registry.get("attack", a)
    if len(set(attacks)) != len(attacks):
        raise GenUnlearnError(f"benchmark spec: 'attacks' repeat in {attacks}")
    ev = _mapping(raw, "eval") or {"protocol": "unlearncanvas"}
    _check_eval(ev, bool(seq))
    concepts = _as_list(raw.get("concepts"))
    for c in concepts + list(seq):
        _check_concept_entry(c)
    return Spec(
        name=str(raw.get("name", "benchmark")),
        models=_models(raw.get("models")),
        methods=methods,
        concepts=concepts,
        seeds=_seeds(raw.get("seeds")),
        attacks=list(attacks),
        eval=ev,
        attack_config=_mapping(raw, "attack_config"),
        raw=raw,
        sequential=list(seq),
        device=_device(raw.get("device")),
        dtype=_dtype(raw.get("dtype")),
    )


def _device(value) -> str | None:
    """The spec's ``device`` (checked against this machine now, not in every cell)."""
    from genunlearn.models.device import resolve_device

    if value is None:
        return None
    if not isinstance(value, str):
        raise GenUnlearnError(
            f"benchmark spec: 'device' must be text (cpu, cuda, cuda:N, mps), got {value!r}"
        )
    resolve_device(value)
    return value


def _dtype(value) -> str | None:
    from genunlearn.models.device import DTYPES, dtype_name, resolve_dtype

    if value is None:
        return None
    if not isinstance(value, str):
        raise GenUnlearnError(
            f"benchmark spec: 'dtype' must be one of {', '.join(DTYPES)}, got {value!r}"
        )
    return dtype_name(resolve_dtype(value))


def _as_list(value) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _check_concept_entry(e) -> None:
    """A concept entry is non-empty text or ``{kind: K, n: N}`` (N a positive integer)."""
    if isinstance(e, str) and e.strip():
        return
    if isinstance(e, dict) and "kind" in e and not set(e) - {"kind", "n"}:
        n = e.get("n", 1)
        if isinstance(e["kind"], str) and isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return
    raise GenUnlearnError(
        f"benchmark spec: concept entry {e!r} must be a concept name or {{kind: K, n: N}} "
        "(N a positive integer)"
    )


def expand_concepts(entries: list[Any], world) -> list[str]:
    """Concept names from names and ``{kind: K, n: N}`` selectors (first N of kind K)."""
    out: list[str] = []
    for e in entries:
        _check_concept_entry(e)
        if isinstance(e, str):
            out.append(e)
        else:
            if world is None:
                raise GenUnlearnError(
                    "concept selectors by kind need a model with a labelled world"
                )
            names = [c.name for c in world.concepts(e["kind"])]
            out += names[: int(e.get("n", len(names)))]
    return list(dict.fromkeys(out))
