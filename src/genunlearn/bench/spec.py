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
```
Unknown keys are errors; ``methods: all`` / ``attacks: all`` select every registered one.
``concepts`` may be left out when ``sequential`` is given.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genunlearn.types import GenUnlearnError

KEYS = {
    "name", "models", "methods", "concepts", "seeds", "attacks", "eval", "attack_config",
    "sequential",
}  # fmt: skip


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


def _method(m) -> MethodSpec:
    if isinstance(m, str):
        return MethodSpec(m)
    if isinstance(m, dict):
        bad = set(m) - {"name", "preset", "overrides", "label"}
        if bad or "name" not in m:
            raise GenUnlearnError(
                f"method entry {m!r}: needs 'name'; allowed keys: name, preset, overrides, label"
            )
        return MethodSpec(
            m["name"], m.get("preset"), dict(m.get("overrides") or {}), m.get("label", "")
        )
    raise GenUnlearnError(f"method entry {m!r} must be a name or a mapping")


def parse_spec(spec: str | Path | dict) -> Spec:
    """Validate a spec (YAML path or dict); names are checked against the registries."""
    from genunlearn import registry
    from genunlearn.config import load_yaml

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
    methods_raw = raw["methods"]
    if methods_raw == "all":
        methods_raw = registry.names("method")
    methods = [_method(m) for m in methods_raw]
    for m in methods:
        registry.get("method", m.name)
    attacks = raw.get("attacks") or []
    if attacks == "all":
        attacks = registry.names("attack")
    for a in attacks:
        registry.get("attack", a)
    ev = dict(raw.get("eval") or {"protocol": "unlearncanvas"})
    registry.get("metric", ev.get("protocol", "unlearncanvas"))
    return Spec(
        name=str(raw.get("name", "benchmark")),
        models=list(raw.get("models") or ["toy-sd"]),
        methods=methods,
        concepts=_as_list(raw.get("concepts")),
        seeds=[int(s) for s in (raw.get("seeds") or [0])],
        attacks=list(attacks),
        eval=ev,
        attack_config=dict(raw.get("attack_config") or {}),
        raw=raw,
        sequential=list(seq),
    )


def _as_list(value) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def expand_concepts(entries: list[Any], world) -> list[str]:
    """Concept names from names and ``{kind: K, n: N}`` selectors (first N of kind K)."""
    out: list[str] = []
    for e in entries:
        if isinstance(e, str):
            out.append(e)
        elif isinstance(e, dict) and "kind" in e:
            if world is None:
                raise GenUnlearnError(
                    "concept selectors by kind need a model with a labelled world"
                )
            names = [c.name for c in world.concepts(e["kind"])]
            out += names[: int(e.get("n", len(names)))]
        else:
            raise GenUnlearnError(f"concept entry {e!r}: a name or {{kind: K, n: N}}")
    return list(dict.fromkeys(out))
