"""results.jsonl: one JSON row per (cell, attack or none, metric).

Row keys: ``cell`` (id), ``model``, ``method``, ``label`` (method name plus overrides),
``target``, ``kind``, ``seed``, ``attack`` (None for plain evaluation), ``metric``, ``value``,
``status`` ("ok" or "failed"), ``error``, ``run_dir``, ``time``, ``genunlearn_version``,
``preset`` and ``overrides`` (the method variant). Sequential-unlearning rows (``kind`` is
"sequential") add ``step``, ``erased`` and, for ``seq_ua_concept``, ``concept``. A cell's rows are
appended in one write when the cell ends, so a cell is either fully recorded or absent.

Versions: rows written before rows carried a version count as version "unknown". The runner
refuses to resume into a file holding another version's rows (:func:`check_version`); the report
reads such files but warns and says so on the page (:func:`version_note`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a results file (or of ``DIR/results.jsonl``); corrupt lines are errors."""
    from genunlearn.types import GenUnlearnError

    p = Path(path)
    if p.is_dir():
        p = p / RESULTS
    if not p.is_file():
        raise GenUnlearnError(f"no results file at {p}")
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise GenUnlearnError(f"{p}:{i} is not a JSON row: {e}") from None
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows in one write (a cell is recorded whole or not at all)."""
    with path.open("a") as fh:
        fh.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        fh.flush()


UNKNOWN_VERSION = "unknown"


def row_versions(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows each genunlearn version wrote (``"unknown"`` for rows without one)."""
    out: dict[str, int] = {}
    for r in rows:
        v = str(r.get("genunlearn_version") or UNKNOWN_VERSION)
        out[v] = out.get(v, 0) + 1
    return out


def version_note(rows: list[dict[str, Any]]) -> str | None:
    """A warning text when ``rows`` mix versions or come from another version, else None."""
    from genunlearn.runs import version

    counts = row_versions(rows)
    current = version()
    if not counts or set(counts) == {current}:
        return None
    listed = ", ".join(f"{v} ({n} rows)" for v, n in sorted(counts.items()))
    if len(counts) > 1:
        return (
            f"these results mix rows from several genunlearn versions: {listed}; figures of "
            f"different versions may not be comparable (this is genunlearn {current})"
        )
    return f"these results were written by genunlearn {listed}; this is genunlearn {current}"


def check_version(path: Path) -> None:
    """Refuse to resume into a results file that holds rows from another genunlearn version.

    Raises:
        GenUnlearnError: naming the versions found and what to do instead.
    """
    from genunlearn.runs import version
    from genunlearn.types import GenUnlearnError

    if not path.is_file() or path.stat().st_size == 0:
        return
    counts = row_versions(read_rows(path))
    current = version()
    other = sorted(v for v in counts if v != current)
    if other:
        raise GenUnlearnError(
            f"{path} holds rows written by genunlearn {', '.join(other)}, but this is genunlearn "
            f"{current}; resuming would silently mix results of two versions (and skip cells the "
            "other version finished). Write to a new output directory, or move the old "
            "results.jsonl away"
        )


def finished_cells(path: Path) -> dict[str, str | None]:
    """Cells that completed successfully -> their configuration fingerprint (None in rows written
    before fingerprints were recorded). Failed cells are retried on the next run."""
    if not path.is_file():
        return {}
    return {r["cell"]: r.get("fingerprint") for r in read_rows(path) if r.get("status") == "ok"}
