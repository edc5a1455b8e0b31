"""Run a benchmark grid: one cell = erase -> evaluate -> attacks, recorded in results.jsonl.

Finished cells are skipped on re-run (resumable); a failing cell records its error and the grid
goes on. A spec with ``sequential`` adds one sequential-unlearning cell per model x method x seed
(:mod:`genunlearn.bench.sequential`). Cells run in this process by default, or as Ray tasks
(``ray=True`` for a local cluster on this machine's CPUs, or an address such as ``"auto"`` /
``"ray://host:10001"``) with the same rows; on a multi-machine cluster the output directory must
be on a filesystem every node sees. Every row records the genunlearn version that wrote it, and
a results file written by another version is refused instead of being resumed into. Every row
also records a fingerprint of what the cell resolved to (the method's full configuration after
preset and overrides, the evaluation settings, the attacks and their settings): resuming into a
directory whose finished cells would now resolve differently (a preset was retuned, an attack
added) is refused too, naming the cells, instead of silently keeping the old figures.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from genunlearn.bench.results import RESULTS, append_rows, check_version, finished_cells
from genunlearn.bench.spec import Cell, Spec, expand_concepts, parse_spec

_MODELS: dict[str, Any] = {}


def _model(name: str):
    from genunlearn.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def fingerprint(cell: Cell, spec: Spec) -> str:
    """Hash of everything a cell's figures depend on besides the model and the code version."""
    import dataclasses
    import hashlib
    import json

    from genunlearn import api

    model = _model(cell.model)
    m = cell.method
    cfg = api.resolve_config(model, "method", m.name, m.preset, **dict(m.overrides))
    what = {
        "method": [m.name, dataclasses.asdict(cfg)],  # resolve_config checked the name
        "eval": spec.eval,
        "attacks": {a: attack_config(spec, a) for a in spec.attacks},
        "sequence": list(cell.sequence),
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _base_row(cell: Cell, run_dir: Path, kind: str | None, spec: Spec) -> dict[str, Any]:
    from genunlearn.runs import version

    try:
        fp = fingerprint(cell, spec)
    except Exception:  # an unresolvable cell fails in run_cell with its own error
        fp = None
    return {
        "cell": cell.id,
        "model": cell.model,
        "method": cell.method.name,
        "label": cell.method.key,
        "preset": cell.method.preset,
        "overrides": dict(cell.method.overrides),
        "target": cell.concept,
        "kind": kind,
        "seed": cell.seed,
        "run_dir": str(run_dir),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "genunlearn_version": version(),
        "fingerprint": fp,
    }


def run_sequential_cell(cell: Cell, spec: Spec, out: Path) -> list[dict[str, Any]]:
    """Erase ``cell.sequence`` in turn and score every step; failures become a 'failed' row."""
    from genunlearn.bench.sequential import erase_sequence, step_rows
    from genunlearn.core.images import save_grid

    run_dir = out / "runs" / cell.id
    try:
        model = _model(cell.model)
        final, steps = erase_sequence(
            model, cell.method.name, cell.sequence, preset=cell.method.preset, seed=cell.seed,
            eval=spec.eval, **cell.method.overrides,
        )  # fmt: skip
        world = final.world
        prompts = [world.caption(world.split([c])[0][0]) for c in cell.sequence][:4]
        prompts += [world.caption(lab) for lab in world.split(list(cell.sequence))[1][:4]]
        save_grid(final.sample(prompts, n=2, seed=0), run_dir / "samples.png", nrow=4)
        return step_rows(steps, _base_row(cell, run_dir, "sequential", spec))
    except Exception as e:  # a failing cell is recorded, the grid goes on
        return [_failed_row(cell, run_dir, "sequential", e, spec)]


def _failed_row(
    cell: Cell, run_dir: Path, kind: str | None, e: BaseException, spec: Spec
) -> dict[str, Any]:
    return {
        **_base_row(cell, run_dir, kind, spec), "attack": None, "metric": "error", "value": None,
        "status": "failed", "error": f"{type(e).__name__}: {e}",
        "traceback": traceback.format_exc(limit=5),
    }  # fmt: skip


def run_cell(cell: Cell, spec: Spec, out: Path) -> list[dict[str, Any]]:
    """Erase, evaluate and attack one cell; never raises (failures become a 'failed' row)."""
    from genunlearn import api

    if cell.sequence:
        return run_sequential_cell(cell, spec, out)
    run_dir = out / "runs" / cell.id
    kind = None
    try:
        model = _model(cell.model)
        kind = model.world.kind_of(cell.concept) if model.world else None
        base = _base_row(cell, run_dir, kind, spec)
        run = api.erase(
            model, cell.method.name, cell.concept, run_dir, preset=cell.method.preset,
            seed=cell.seed, overwrite=True, **cell.method.overrides,
        )  # fmt: skip
        rows = []
        ev = dict(spec.eval)
        protocol = ev.pop("protocol", "unlearncanvas")
        ev.setdefault("seed", cell.seed)
        scores = api.evaluate(run.model, cell.concept, protocol, **ev)
        for k, v in {**scores, **run.efficiency}.items():
            if isinstance(v, (int, float)):
                rows.append(
                    {**base, "attack": None, "metric": k, "value": float(v), "status": "ok"}
                )
        for a in spec.attacks:
            res = api.attack(run.model, a, cell.concept, original=model, **attack_config(spec, a))
            for k, v in res.summary().items():
                if isinstance(v, (int, float)):
                    rows.append(
                        {**base, "attack": a, "metric": k, "value": float(v), "status": "ok"}
                    )
            examples = [p for p, ok in zip(res.adversarial_prompts, res.success, strict=True) if ok]
            rows.append(
                {**base, "attack": a, "metric": "examples", "value": None, "status": "ok",
                 "prompts": examples[:3]}
            )  # fmt: skip
            if res.images is not None:
                from genunlearn.core.images import save_grid

                save_grid(res.images[:8], run_dir / f"attack_{a}.png", nrow=8)
        return rows
    except Exception as e:  # a failing cell is recorded, the grid goes on
        return [_failed_row(cell, run_dir, kind, e, spec)]


def attack_config(spec: Spec, attack: str) -> dict[str, Any]:
    """Shared ``attack_config`` keys plus the attack's own section (``{seed_search: {...}}``)."""
    from genunlearn import registry

    attacks = set(registry.names("attack"))
    shared = {k: v for k, v in spec.attack_config.items() if k not in attacks}
    return {**shared, **(spec.attack_config.get(attack) or {})}


def _check_concepts(names: list[str], world) -> None:
    """Single words must be concepts of the model's world (free text with spaces is allowed)."""
    if world is not None:
        for c in names:
            if " " not in c.strip():
                world.concept(c)  # raises, naming the closest valid concepts


def expand(spec: Spec) -> list[Cell]:
    """All cells of a spec, in a stable order; unknown concepts fail here, before any work."""
    cells = []
    for m in spec.models:
        world = _model(m).world
        concepts = expand_concepts(spec.concepts, world)
        sequence = tuple(expand_concepts(spec.sequential, world))
        _check_concepts(concepts + list(sequence), world)
        for concept in concepts:
            for method in spec.methods:
                for seed in spec.seeds:
                    cells.append(Cell(m, method, concept, seed))
        if sequence:
            for method in spec.methods:
                for seed in spec.seeds:
                    cells.append(Cell(m, method, "+".join(sequence), seed, sequence))
    return cells


def run_spec(spec, out_dir, ray=None, progress: bool = True, report: bool = False) -> Path:
    """Run every unfinished cell of ``spec`` into ``out_dir``; returns the results path."""
    import yaml
    from tqdm.auto import tqdm

    s = parse_spec(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(s.raw, sort_keys=False))
    results = out / RESULTS
    check_version(results)
    done = finished_cells(results)
    cells = expand(s)
    check_fingerprints(cells, s, done, results)
    todo = [c for c in cells if c.id not in done]
    if ray:
        _run_ray(todo, s, out, results, ray, progress)
    else:
        for cell in tqdm(todo, desc=f"bench {s.name}", disable=not progress):
            append_rows(results, run_cell(cell, s, out))
    results.touch()
    if report:
        from genunlearn.report.html import write_report

        write_report(results, out / "report.html")
    return results


def check_fingerprints(cells: list[Cell], spec: Spec, done: dict[str, str | None], path) -> None:
    """Refuse to resume when finished cells would now resolve to another configuration.

    Raises:
        GenUnlearnError: naming the stale cells and what to do instead.
    """
    from genunlearn.types import GenUnlearnError

    stale = [
        c.id for c in cells if done.get(c.id) is not None and done[c.id] != fingerprint(c, spec)
    ]
    if stale:
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise GenUnlearnError(
            f"{path} has finished cells that were run with another configuration than this spec "
            f"now gives them (a preset, default, evaluation setting or attack changed): "
            f"{', '.join(stale[:5])}{more}. Resuming would keep their old figures beside new "
            "ones. Write to a new output directory, or move the old results.jsonl away"
        )


def _run_ray(todo, s, out, results, address, progress) -> None:
    import os

    from tqdm.auto import tqdm

    try:
        import ray
    except ImportError:
        from genunlearn.types import GenUnlearnError

        raise GenUnlearnError("--ray needs Ray: pip install 'genunlearn[ray]'") from None
    started = not ray.is_initialized()
    if started:
        # workers must stay offline and quiet like this process, and share its image cache
        keep = (
            "HF_HUB_OFFLINE",
            "GENUNLEARN_CACHE",
            "DIFFUSERS_VERBOSITY",
            "TRANSFORMERS_VERBOSITY",
        )
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.setdefault("HF_HUB_OFFLINE", "1")
        ray.init(
            address=None if address is True else address, include_dashboard=False,
            log_to_driver=False, runtime_env={"env_vars": env},
        )  # fmt: skip
    try:
        task = ray.remote(run_cell)
        pending = {task.remote(c, s, out): c for c in todo}
        bar = tqdm(total=len(pending), desc=f"bench {s.name} (ray)", disable=not progress)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except Exception as e:  # a worker that died still leaves a failed row
                    rows = [_failed_row(cell, out / "runs" / cell.id, None, e, s)]
                append_rows(results, rows)
                bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()
