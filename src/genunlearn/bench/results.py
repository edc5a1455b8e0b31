"""results.jsonl: one JSON row per (cell, attack or none, metric).

Row keys: ``cell`` (id), ``model``, ``method``, ``label`` (method name plus overrides),
``target``, ``kind``, ``seed``, ``attack`` (None for plain evaluation), ``metric``, ``value``,
``status`` ("ok" or "failed"), ``error``, ``run_dir``, ``time``. A cell's rows are appended in one
write when the cell ends, so a cell is either fully recorded or absent.
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


def finished_cells(path: Path) -> set[str]:
    """Cells that completed successfully (failed cells are retried on the next run)."""
    if not path.is_file():
        return set()
    return {r["cell"] for r in read_rows(path) if r.get("status") == "ok"}
