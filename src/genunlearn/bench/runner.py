"""Run a benchmark grid: one cell = erase -> evaluate -> attacks, recorded in results.jsonl.

Finished cells are skipped on re-run (resumable); a failing cell records its error and the grid
goes on. Cells run in this process by default, or as Ray tasks (``ray=True`` for a local
cluster, or an address such as ``"auto"`` / ``"ray://host:10001"``) with the same rows.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from genunlearn.bench.results import RESULTS, append_rows, finished_cells
from genunlearn.bench.spec import Cell, Spec, expand_concepts, parse_spec

_MODELS: dict[str, Any] = {}


def _model(name: str):
    from genunlearn.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def _base_row(cell: Cell, run_dir: Path, kind: str | None) -> dict[str, Any]:
    return {
        "cell": cell.id,
        "model": cell.model,
        "method": cell.method.name,
        "label": cell.method.key,
        "target": cell.concept,
        "kind": kind,
        "seed": cell.seed,
        "run_dir": str(run_dir),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_cell(cell: Cell, spec: Spec, out: Path) -> list[dict[str, Any]]:
    """Erase, evaluate and attack one cell; never raises (failures become a 'failed' row)."""
    from genunlearn import api

    run_dir = out / "runs" / cell.id
    kind = None
    try:
        model = _model(cell.model)
        kind = model.world.kind_of(cell.concept) if model.world else None
        base = _base_row(cell, run_dir, kind)
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
        row = _base_row(cell, run_dir, kind)
        return [
            {**row, "attack": None, "metric": "error", "value": None, "status": "failed",
             "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        ]  # fmt: skip


def attack_config(spec: Spec, attack: str) -> dict[str, Any]:
    """Shared ``attack_config`` keys plus the attack's own section (``{seed_search: {...}}``)."""
    from genunlearn import registry

    attacks = set(registry.names("attack"))
    shared = {k: v for k, v in spec.attack_config.items() if k not in attacks}
    return {**shared, **(spec.attack_config.get(attack) or {})}


def expand(spec: Spec) -> list[Cell]:
    """All cells of a spec, in a stable order."""
    cells = []
    for m in spec.models:
        world = _model(m).world
        for concept in expand_concepts(spec.concepts, world):
            for method in spec.methods:
                for seed in spec.seeds:
                    cells.append(Cell(m, method, concept, seed))
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
    done = finished_cells(results)
    todo = [c for c in expand(s) if c.id not in done]
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


def _run_ray(todo, s, out, results, address, progress) -> None:
    from tqdm.auto import tqdm

    try:
        import ray
    except ImportError:
        from genunlearn.types import GenUnlearnError

        raise GenUnlearnError("--ray needs Ray: pip install 'genunlearn[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address is True else address, include_dashboard=False)
    task = ray.remote(run_cell)
    pending = {task.remote(c, s, out): c for c in todo}
    bar = tqdm(total=len(pending), desc=f"bench {s.name} (ray)", disable=not progress)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            append_rows(results, ray.get(ref))
            bar.update(1)
    bar.close()
