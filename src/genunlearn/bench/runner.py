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

Before any cell runs, every method's preset and overrides and every attack's settings are resolved
on every model (a typo fails at once, not in every cell), every run directory is checked to lie
inside ``OUT/runs``, and ``OUT/.lock`` is locked (an exclusive ``flock``, released by the OS when
the process ends, so a crashed run never leaves a stale lock): a second benchmark on the same
directory refuses at once, naming the holder's pid, or queues behind it with ``wait=True``. A
benchmark in which no cell succeeded raises :class:`NoCellFinished` after its rows are written.

The runner writes results only; the HTML report is written from them by ``genunlearn report OUT``
(:func:`genunlearn.report.write_report`), which ``genunlearn bench`` runs when the grid ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from genunlearn import api, registry, runs
from genunlearn.bench.results import (
    RESULTS,
    append_rows,
    check_version,
    finished_cells,
    read_rows,
)
from genunlearn.bench.sequential import erase_sequence, step_rows
from genunlearn.bench.spec import Cell, Spec, expand_concepts, parse_spec
from genunlearn.core.images import save_grid
from genunlearn.types import GenUnlearnError

LOCK = ".lock"
RUNS = "runs"

_MODELS: dict[str, Any] = {}


class NoCellFinished(GenUnlearnError):
    """No cell of a benchmark grid finished; the failed rows are in :attr:`results`."""

    def __init__(self, message: str, results: Path | None = None):
        super().__init__(message)  # one argument, so the error still pickles (Ray, processes)
        self.results = results


def _model(name: str, spec: Spec | None = None):
    """The model ``name``, loaded once per process on the spec's device in its dtype."""
    device, dtype = (spec.device, spec.dtype) if spec is not None else (None, None)
    key = (name, device, dtype)
    if key not in _MODELS:
        _MODELS[key] = api.load_model(name, device=device, dtype=dtype)
    return _MODELS[key]


def fingerprint(cell: Cell, spec: Spec) -> str:
    """Hash of everything a cell's figures depend on besides the model and the code version."""
    import dataclasses
    import hashlib
    import json

    model = _model(cell.model, spec)
    m = cell.method
    cfg = api.resolve_config(model, "method", m.name, m.preset, config=dict(m.overrides))
    what = {
        "method": [m.name, dataclasses.asdict(cfg)],  # resolve_config checked the name
        "eval": spec.eval,
        "attacks": {a: attack_config(spec, a) for a in spec.attacks},
        "sequence": list(cell.sequence),
    }
    # only when set, so that the fingerprints of specs without them stay what they were
    what.update({k: v for k, v in (("device", spec.device), ("dtype", spec.dtype)) if v})
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_dir(out: Path, cell: Cell) -> Path:
    """``OUT/runs/<cell id>``, refused unless it resolves to a direct child of ``OUT/runs`` (a
    cell id is a safe file name, and a planted symlink must not redirect a run elsewhere).

    Raises:
        GenUnlearnError: the path would lie outside ``OUT/runs``.
    """
    root = Path(out) / RUNS
    d = root / cell.id
    if d.resolve().parent != root.resolve() or d.name in ("", ".", ".."):
        raise GenUnlearnError(
            f"run directory {d} of cell {cell.id!r} resolves to {d.resolve()}, outside {root}; "
            "refusing to write or remove it"
        )
    return d


def _base_row(cell: Cell, run_dir: Path, kind: str | None, spec: Spec) -> dict[str, Any]:
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
        "genunlearn_version": runs.version(),
        "fingerprint": fp,
        **{k: v for k, v in (("device", spec.device), ("dtype", spec.dtype)) if v},
    }


def run_sequential_cell(cell: Cell, spec: Spec, out: Path) -> list[dict[str, Any]]:
    """Erase ``cell.sequence`` in turn and score every step; failures become a 'failed' row."""
    d = Path(out) / RUNS / cell.id
    try:
        # the directory is a genunlearn run directory, so a retry may replace it (and only it)
        d = runs.prepare_dir(run_dir(out, cell), overwrite=True)
        try:
            model = _model(cell.model, spec)
            final, steps = erase_sequence(
                model, cell.method.name, cell.sequence, preset=cell.method.preset,
                seed=cell.seed, eval=spec.eval, config=dict(cell.method.overrides),
            )  # fmt: skip
        except Exception as e:
            runs.mark_failed(d, f"{type(e).__name__}: {e}")
            raise
        world = final.world
        prompts = [world.caption(world.split([c])[0][0]) for c in cell.sequence][:4]
        prompts += [world.caption(lab) for lab in world.split(list(cell.sequence))[1][:4]]
        save_grid(final.sample(prompts, n=2, seed=0), d / "samples.png", nrow=4)
        runs.finish(d)
        return step_rows(steps, _base_row(cell, d, "sequential", spec))
    except Exception as e:  # a failing cell is recorded, the grid goes on
        return [_failed_row(cell, d, "sequential", e, spec)]


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
    if cell.sequence:
        return run_sequential_cell(cell, spec, out)
    d = Path(out) / RUNS / cell.id
    kind = None
    try:
        d = run_dir(out, cell)
        model = _model(cell.model, spec)
        kind = model.world.kind_of(cell.concept) if model.world else None
        base = _base_row(cell, d, kind, spec)
        # overrides go in as the config layer, so a key such as ``seed`` or ``progress`` can
        # never be taken for one of erase's own arguments
        run = api.erase(
            model, cell.method.name, cell.concept, d, preset=cell.method.preset,
            seed=cell.seed, overwrite=True, config=dict(cell.method.overrides),
        )  # fmt: skip
        rows = []
        ev = dict(spec.eval)
        protocol = ev.pop("protocol", "unlearncanvas")
        ev.setdefault("seed", cell.seed)
        scores = api.evaluate(run.model, cell.concept, protocol, config=ev)
        for k, v in {**scores, **run.efficiency}.items():
            if isinstance(v, (int, float)):
                rows.append(
                    {**base, "attack": None, "metric": k, "value": float(v), "status": "ok"}
                )
        for a in spec.attacks:
            res = api.attack(
                run.model, a, cell.concept, original=model, config=attack_config(spec, a)
            )
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
                save_grid(res.images[:8], d / f"attack_{a}.png", nrow=8)
        return rows
    except Exception as e:  # a failing cell is recorded, the grid goes on
        return [_failed_row(cell, d, kind, e, spec)]


def attack_config(spec: Spec, attack: str) -> dict[str, Any]:
    """Shared ``attack_config`` keys plus the attack's own section (``{seed_search: {...}}``)."""
    attacks = set(registry.names("attack"))
    shared = {k: v for k, v in spec.attack_config.items() if k not in attacks}
    return {**shared, **(spec.attack_config.get(attack) or {})}


def validate(spec: Spec, load: Callable[[str], Any] | None = None) -> None:
    """Resolve every method variant and attack configuration on every model before any work.

    Args:
        spec: a parsed spec.
        load: model name -> adapter (the model decides the default preset); None: the
            spec's models as the runner loads them (its device and dtype).

    Raises:
        GenUnlearnError: an unknown preset, override or ``attack_config`` key, or a bad value,
            naming the method label or attack and the valid keys.
    """
    import dataclasses
    import difflib

    names = registry.names("attack")
    for k, v in spec.attack_config.items():
        if k in names and not isinstance(v, dict):
            raise GenUnlearnError(
                f"benchmark spec: attack_config section {k!r} must be a mapping, got {v!r}"
            )
    # a shared key no attack knows is a typo (of a setting or of an attack's section)
    known = {f.name for a in names for f in dataclasses.fields(registry.get("attack", a).config)}
    for k in spec.attack_config:
        if k not in names and k not in known:
            close = difflib.get_close_matches(str(k), sorted(known) + names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GenUnlearnError(
                f"benchmark spec: attack_config key {k!r} is neither an attack setting nor an "
                f"attack's section{hint}. Settings: {', '.join(sorted(known))}; sections: "
                f"{', '.join(names)}"
            )
    # sections of attacks outside the grid are checked too: a typo there is still a typo
    checked = list(spec.attacks) + [a for a in spec.attack_config if a in names]
    for name in spec.models:
        model = load(name) if load is not None else _model(name, spec)
        for m in spec.methods:
            try:
                api.resolve_config(model, "method", m.name, m.preset, config=dict(m.overrides))
            except GenUnlearnError as e:
                raise GenUnlearnError(f"benchmark spec, method {m.key!r}: {e}") from None
        for a in dict.fromkeys(checked):
            settings = attack_config(spec, a) if a in spec.attacks else spec.attack_config[a]
            try:
                api.resolve_config(model, "attack", a, None, config=dict(settings))
            except GenUnlearnError as e:
                raise GenUnlearnError(f"benchmark spec, attack_config for {a!r}: {e}") from None


def _check_concepts(names: list[str], world) -> None:
    """Single words must be concepts of the model's world (free text with spaces is allowed)."""
    if world is not None:
        for c in names:
            if " " not in c.strip():
                world.concept(c)  # raises, naming the closest valid concepts


def expand(spec: Spec) -> list[Cell]:
    """All cells of a spec, in a stable order; unknown concepts fail here, before any work.

    Raises:
        GenUnlearnError: an unknown concept, a grid without cells, or two cells with one id.
    """
    cells = []
    for m in spec.models:
        world = _model(m, spec).world
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
    if not cells:
        raise GenUnlearnError(f"benchmark {spec.name!r} has no cells (no concepts selected)")
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.id in seen:  # e.g. concepts "a b" and "a_b": they would share rows and a directory
            raise GenUnlearnError(
                f"benchmark cells {seen[c.id]!r} and {c!r} share the id {c.id!r}; rename one "
                "(a method 'label', a concept's spelling)"
            )
        seen[c.id] = c
    return cells


def _done_key(cell: Cell, done: dict[str, str | None]) -> str | None:
    """The id under which ``cell`` finished (its id, or the id older versions gave it)."""
    for key in (cell.id, cell.legacy_id):
        if key in done:
            return key
    return None


@contextlib.contextmanager
def lock_out_dir(out: str | Path, wait: bool = False, progress: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``OUT/.lock`` while the block runs (one benchmark per directory).

    The lock is an OS ``flock``: it is released when its holder exits, however it exits, so a
    lock file left by a dead process never blocks. The holder's pid is written into the file
    for the message of the one that is refused. Where ``fcntl`` is missing (Windows) nothing is
    locked.

    Args:
        out: the output directory (created if missing).
        wait: block until the holder finishes instead of refusing.
        progress: say on stderr that this process waits.

    Raises:
        GenUnlearnError: another process holds the lock and ``wait`` is False.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        yield Path(out)
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    with open(path, "a+") as fh:  # the lock goes when the file is closed
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip().splitlines()[:1] or ["unknown"]
            if not wait:
                raise GenUnlearnError(
                    f"output directory {out} is in use by another genunlearn bench (pid "
                    f"{holder[0]}, lock {path}); wait for it to finish, use another output "
                    "directory, or pass wait=True (CLI: --wait) to start when it is done"
                ) from None
            if progress:
                print(f"waiting for pid {holder[0]} to release {path}", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield out


def run_benchmark(
    spec,
    out_dir: str | Path = "results",
    *,
    ray: str | bool | None = None,
    progress: bool = True,
    wait: bool = False,
) -> Path:
    """Run every unfinished cell of a benchmark grid into ``out_dir``; returns the results path.

    Only ``OUT/results.jsonl`` (and the run directories) are written; for the HTML report and
    tables run ``genunlearn report OUT`` or :func:`genunlearn.report.write_report` (the
    ``genunlearn bench`` command does so when the grid ends).

    Args:
        spec: a YAML path or a dict.
        out_dir: results directory (re-use it to resume).
        ray: run cells as Ray tasks (True: local cluster; or a cluster address).
        progress: show progress bars.
        wait: when another benchmark holds ``out_dir``, wait for it instead of refusing.

    Raises:
        GenUnlearnError: a bad spec (before any cell runs), ``out_dir`` in use by another
            benchmark, or results of another version or configuration.
        NoCellFinished: no cell of the grid finished (raised after its rows are written).
    """
    s = parse_spec(spec)
    fresh = not Path(out_dir).exists()
    try:
        with lock_out_dir(out_dir, wait=wait, progress=progress) as out:
            return _run_locked(s, out, ray, progress)
    except GenUnlearnError:
        if fresh:  # a spec refused before any work leaves no directory behind
            _remove_if_only_lock(Path(out_dir))
        raise


def _remove_if_only_lock(out: Path) -> None:
    with contextlib.suppress(OSError):
        if {p.name for p in out.iterdir()} == {LOCK}:
            (out / LOCK).unlink()
            out.rmdir()


def _run_locked(s: Spec, out: Path, ray, progress: bool) -> Path:
    import yaml
    from tqdm.auto import tqdm

    results = out / RESULTS
    check_version(results)
    done = finished_cells(results)
    cells = expand(s)
    validate(s)
    for c in cells:
        run_dir(out, c)  # a bad path is refused before any cell runs
    check_fingerprints(cells, s, done, results)
    (out / "spec.yaml").write_text(yaml.safe_dump(s.raw, sort_keys=False))
    todo = [c for c in cells if _done_key(c, done) is None]
    if ray:
        _run_ray(todo, s, out, results, ray, progress)
    else:
        for cell in tqdm(todo, desc=f"bench {s.name}", disable=not progress):
            append_rows(results, run_cell(cell, s, out))
    results.touch()
    _check_any_finished(cells, s, results)
    return results


def _check_any_finished(cells: list[Cell], spec: Spec, results: Path) -> None:
    """Raise when no cell of the grid has finished: a benchmark of failures is not a success."""
    done = finished_cells(results)
    if any(_done_key(c, done) is not None for c in cells):
        return
    ids = {c.id for c in cells}
    errors = [r for r in read_rows(results) if r.get("status") == "failed" and r["cell"] in ids]
    first = str(errors[-1].get("error") or "?").strip().splitlines() if errors else ["?"]
    which = "its only cell" if len(cells) == 1 else f"all {len(cells)} cells"
    raise NoCellFinished(
        f"benchmark {spec.name!r}: {which} failed (last error, cell "
        f"{errors[-1]['cell'] if errors else '?'}: {first[0] if first else '?'}); "
        f"their rows are in {results}",
        results,
    )


def check_fingerprints(cells: list[Cell], spec: Spec, done: dict[str, str | None], path) -> None:
    """Refuse to resume when finished cells would now resolve to another configuration.

    Raises:
        GenUnlearnError: naming the stale cells and what to do instead.
    """
    stale = []
    for c in cells:
        key = _done_key(c, done)
        if key is not None and done[key] is not None and done[key] != fingerprint(c, spec):
            stale.append(c.id)
    if stale:
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise GenUnlearnError(
            f"{path} has finished cells that were run with another configuration than this spec "
            f"now gives them (a preset, default, evaluation setting or attack changed): "
            f"{', '.join(stale[:5])}{more}. Resuming would keep their old figures beside new "
            "ones. Write to a new output directory, or move the old results.jsonl away"
        )


def _run_ray(todo, s, out, results, address, progress) -> None:
    from tqdm.auto import tqdm

    try:
        import ray
    except ImportError:
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
                    rows = [_failed_row(cell, out / RUNS / cell.id, None, e, s)]
                append_rows(results, rows)
                bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()
