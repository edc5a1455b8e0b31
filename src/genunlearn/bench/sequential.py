"""Sequential unlearning: erase concepts one after another with one method, scoring every step.

UnlearnCanvas (https://arxiv.org/abs/2402.11846, v2+) erases T1, ..., Tk in turn and tracks two
failure modes: *unlearning rebound* (an earlier concept comes back when a later one is erased) and
a collapse of retainability as erasures pile up. After step ``j`` (concepts ``c1..cj`` erased from
the model left by step ``j-1``) the world's evaluation grid is sampled once and labelled by the
evaluator:

- ``ua[c]`` for every ``c`` erased so far: share of images whose prompt contains ``c`` that the
  evaluator does not label ``c`` (UnlearnCanvas' UA, per concept, so rebound is visible);
  ``seq_ua`` is their mean.
- On the retain images (prompts that contain none of ``c1..cj``): ``seq_ira`` = accuracy of the
  heads of the erased concepts' kinds, ``seq_cra`` = accuracy of the other heads, ``seq_retain`` =
  mean accuracy over all heads.

Each step erases with the method's preset and the same seed as a single erasure would. Methods
whose output is an inference-time state (e.g. ``negative_prompt``) keep only what the method
itself keeps across a second call; that is part of what this protocol measures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genunlearn import api
from genunlearn.config import build_config
from genunlearn.types import GenUnlearnError


def _acc(preds: dict, labels: list[dict], heads: Sequence[str], keep: list[int]) -> float | None:
    if not keep or not heads:
        return None
    per_head = [sum(preds[h][i] == labels[i][h] for i in keep) / len(keep) for h in heads]
    return sum(per_head) / len(per_head)


def score_step(model, erased: Sequence[str], cfg) -> dict[str, Any]:
    """Per-concept UA of ``erased`` and retain accuracies on one labelled sample of the grid."""
    from genunlearn.metrics.concept_accuracy import generate_and_label

    world = model.world
    _, preds, labels = generate_and_label(model, world.grid(), cfg)
    kinds = {c: world.concept(c).kind for c in erased}
    ua = {}
    for c, k in kinds.items():
        idx = [i for i, lab in enumerate(labels) if lab[k] == c]
        ua[c] = sum(preds[k][i] != c for i in idx) / len(idx) if idx else None
    retain = [i for i, lab in enumerate(labels) if not any(lab[k] == c for c, k in kinds.items())]
    in_kinds = sorted(set(kinds.values()))
    other = [h for h in world.heads if h not in in_kinds]
    vals = [v for v in ua.values() if v is not None]
    return {
        "ua": ua,
        "seq_ua": sum(vals) / len(vals) if vals else None,
        "seq_ira": _acc(preds, labels, in_kinds, retain),
        "seq_cra": _acc(preds, labels, other, retain),
        "seq_retain": _acc(preds, labels, list(world.heads), retain),
        "n_retain_images": len(retain),
    }


def erase_sequence(
    model,
    method: str,
    concepts: Sequence[str],
    *,
    preset: str | None = None,
    seed: int = 0,
    eval: dict[str, Any] | None = None,
    progress: bool = False,
    config: dict[str, Any] | None = None,
    **overrides,
) -> tuple[Any, list[dict[str, Any]]]:
    """Erase ``concepts`` in order with ``method``, scoring the model after every step.

    Args:
        model: an adapter with a labelled world and evaluator (toy-sd), or its name/path.
        method: registry name.
        concepts: world concept names, erased first to last (at least one, no repeats).
        preset: the method's preset (default: "toy" on toy worlds).
        seed: seeds every erase and is the evaluation's image seed unless ``eval`` sets one.
        eval: evaluation settings of :class:`~genunlearn.metrics.concept_accuracy.UnlearnCanvasConfig`
            (``n_per_prompt``, ``seed``, ``steps``, ``guidance``; ``fid`` is ignored).
        progress: show a progress bar over steps.
        config: method config values as a dict (applied after the preset; its keys may be any
            config key, ``seed`` or ``progress`` included, which ``**overrides`` cannot pass).
        **overrides: method config values (applied last).

    Returns:
        ``(final model, steps)``: one dict per step with ``step`` (1-based), ``erased`` (the
        concept of that step), ``ua`` (concept -> UA for all erased so far), ``seq_ua``,
        ``seq_ira``, ``seq_cra``, ``seq_retain``, ``seconds`` (that step's erase) and
        ``n_retain_images``. The input model is not changed.
    """
    from tqdm.auto import tqdm

    from genunlearn.metrics.concept_accuracy import UnlearnCanvasConfig

    if isinstance(model, (str, Path)):
        model = api.load_model(model)
    concepts = list(concepts)
    if not concepts:
        raise GenUnlearnError("sequential unlearning needs at least one concept")
    if len(set(concepts)) != len(concepts):
        raise GenUnlearnError(f"sequential unlearning: concepts repeat in {concepts}")
    if getattr(model, "world", None) is None or getattr(model, "evaluator_dir", None) is None:
        raise GenUnlearnError(
            f"sequential unlearning scores with the world's evaluator; model {model.model_id} has "
            "none (use toy-sd or a pipeline from 'genunlearn testbed train')"
        )
    for c in concepts:
        model.world.concept(c)  # unknown names fail before any work, with close matches
    ev = {k: v for k, v in (eval or {}).items() if k not in ("protocol", "fid")}
    ev.setdefault("seed", seed)
    cfg = build_config(UnlearnCanvasConfig, ev, {"fid": False}, where="sequential eval")
    current, steps = model, []
    for j, c in enumerate(tqdm(concepts, desc=f"sequential {method}", disable=not progress), 1):
        t0 = time.perf_counter()
        current = api.erase(
            current, method, c, preset=preset, seed=seed, config=config, **overrides
        ).model
        seconds = time.perf_counter() - t0
        steps.append(
            {"step": j, "erased": c, "seconds": seconds, **score_step(current, concepts[:j], cfg)}
        )
    return current, steps


def step_rows(steps: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Results rows of a sequence: per step ``seq_*`` metrics and one ``seq_ua_concept`` per
    concept erased so far (with ``concept``), all with ``step`` and ``erased``."""
    rows = []
    for s in steps:
        tag = {**base, "attack": None, "status": "ok", "step": s["step"], "erased": s["erased"]}
        for m in ("seq_ua", "seq_ira", "seq_cra", "seq_retain"):
            if s[m] is not None:
                rows.append({**tag, "metric": m, "value": float(s[m])})
        rows.append({**tag, "metric": "seq_seconds", "value": float(s["seconds"])})
        for c, v in s["ua"].items():
            if v is not None:
                rows.append({**tag, "metric": "seq_ua_concept", "concept": c, "value": float(v)})
    return rows
