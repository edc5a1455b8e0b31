"""Tables from results rows: the method summary, the robustness matrix, CSV and Markdown.

A *method* is a ``(model, label)`` pair; its ``name`` is the label, with the model appended when
the results hold more than one model. Means and standard deviations are taken over every finished
cell of a method (all concepts and seeds pooled); the standard deviation is the sample one
(``ddof=1``) and is ``None`` for fewer than two values. When a cell was recorded more than once,
its last row for a metric wins. Missing values are ``None`` in the tables, an empty field in CSV
and ``"–"`` in Markdown and HTML.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MISSING = "–"
KIND_ORDER = ("style", "object", "colour")
KIND_METRICS = ("ua", "ira", "cra")  # also the rates shown with their count and 95% interval
UNDEFINED = "n/d"  # a rate the world cannot define (CRA of a one-attribute world)
ID_COLUMNS = ("name", "model", "method", "label", "n_cells", "n_failed")

# base column -> (row metric, scale applied to the raw value, header, display format)
SUMMARY_METRICS: dict[str, tuple[str, float, str, str]] = {
    "ua": ("ua", 1.0, "UA (%)", "pct"),
    "ira": ("ira", 1.0, "IRA (%)", "pct"),
    "cra": ("cra", 1.0, "CRA (%)", "pct"),
    # genunlearn's addition: the other heads' accuracy on the target prompts (docs/metrics.md)
    "target_cra": ("target_cra", 1.0, "target CRA (%)", "pct"),
    "fid": ("fid", 1.0, "FID", "num"),
    "seconds": ("seconds", 1.0, "time (s)", "num"),
    "peak_memory_mb": ("peak_memory_bytes", 1.0 / 2**20, "peak mem (MB)", "num"),
    "storage_kb": ("storage_bytes", 1.0 / 2**10, "storage", "size"),
}


SEQUENTIAL = "sequential"  # the ``kind`` of sequential-unlearning rows


def _ok(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def single_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of single-concept cells (sequential-unlearning rows have their own section)."""
    return [r for r in rows if r.get("kind") != SEQUENTIAL]


def method_key(r: dict[str, Any]) -> tuple[str, str]:
    """The ``(model, label)`` pair a row belongs to (the label falls back to the method)."""
    return (str(r.get("model")), str(r.get("label", r.get("method"))))


def method_keys(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, str]], dict]:
    """Methods in display order ("original" first, then first seen) and their display names.

    Args:
        rows: results rows.

    Returns:
        ``(keys, names)``: the ``(model, label)`` pairs and a dict from pair to display name.
    """
    keys: list[tuple[str, str]] = []
    method_of: dict[tuple[str, str], Any] = {}
    for r in rows:
        k = method_key(r)
        if k not in keys:
            keys.append(k)
        method_of[k] = r.get("method")
    keys.sort(key=lambda k: method_of.get(k) != "original")
    multi = len({m for m, _ in keys}) > 1
    return keys, {k: f"{k[1]} ({k[0]})" if multi else k[1] for k in keys}


def _latest(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Last ok row per (cell, attack, metric)."""
    return {(r.get("cell"), r.get("attack"), r.get("metric")): r for r in _ok(rows)}


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of ``values`` (``None`` where undefined).

    Args:
        values: numbers; ``None`` entries are dropped.

    Returns:
        ``(mean, std)``; mean is ``None`` for no values, std for fewer than two.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None


def kinds_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Concept kinds present in ``rows``: style, object, colour first, then others sorted."""
    seen = {r.get("kind") for r in rows if r.get("kind") and r.get("kind") != SEQUENTIAL}
    return [k for k in KIND_ORDER if k in seen] + sorted(seen - set(KIND_ORDER))


def summary_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method with mean and std of each metric, overall and per concept kind.

    Args:
        rows: results rows as read by :func:`genunlearn.bench.results.read_rows`.

    Returns:
        Dicts with keys ``name, model, method, label, n_cells, n_failed``, then
        ``<base>_mean`` / ``<base>_std`` for each base of :data:`SUMMARY_METRICS` (UA, IRA, CRA as
        fractions, FID, seconds, peak memory in MB = 2**20 bytes, storage in KB = 2**10 bytes) and
        ``<kind>_<ua|ira|cra>_mean`` / ``_std`` for each concept kind present. Every dict has
        every key. Sequential-unlearning rows are left out (see :func:`sequential_table`).
    """
    rows = single_rows(rows)
    keys, names = method_keys(rows)
    latest = [r for r in _latest(rows).values() if r.get("attack") is None]
    ok_cells = {r.get("cell") for r in _ok(rows)}
    failed = {r.get("cell"): r for r in rows if r.get("status") == "failed"}
    kinds = kinds_of(rows)
    table = []
    for k in keys:
        mine = [r for r in latest if method_key(r) == k]
        first = next(r for r in rows if method_key(r) == k)
        row: dict[str, Any] = {
            "name": names[k],
            "model": k[0],
            "method": first.get("method"),
            "label": k[1],
            "n_cells": len({r.get("cell") for r in mine}),
            "n_failed": sum(
                1 for c, r in failed.items() if method_key(r) == k and c not in ok_cells
            ),
        }
        for base, (metric, scale, _, _) in SUMMARY_METRICS.items():
            vals = [r["value"] * scale for r in mine if r.get("metric") == metric]
            row[f"{base}_mean"], row[f"{base}_std"] = mean_std(vals)
        for m in KIND_METRICS:
            row[f"{m}_n"], ci = pooled_rate(mine, m)
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci or (None, None)
            # a rate a cell's world cannot define (CRA of a one-attribute world) is absent from
            # rows that report UA; say so instead of showing it as merely missing
            row[f"{m}_undefined"] = row[f"{m}_mean"] is None and row["ua_mean"] is not None
        for kind in kinds:
            for m in KIND_METRICS:
                vals = [r["value"] for r in mine if r.get("metric") == m and r.get("kind") == kind]
                row[f"{kind}_{m}_mean"], row[f"{kind}_{m}_std"] = mean_std(vals)
        table.append(row)
    return table


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z`` 1.96); stays inside [0, 1] and is
    sensible at rates of 0 or 1, unlike the normal approximation."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pooled_rate(rows: Sequence[dict[str, Any]], metric: str):
    """``(images, 95% interval)`` of a rate pooled over cells that recorded its count
    (``<metric>_n`` rows, written by the UnlearnCanvas protocol); ``(None, None)`` without."""
    by_cell: dict[Any, dict[str, float]] = {}
    for r in rows:
        if r.get("metric") in (metric, f"{metric}_n") and r.get("value") is not None:
            by_cell.setdefault(r.get("cell"), {})[r["metric"]] = float(r["value"])
    pairs = [(v[metric], int(v[f"{metric}_n"])) for v in by_cell.values() if len(v) == 2]
    n = sum(k for _, k in pairs)
    if not n:
        return None, None
    return n, wilson_interval(sum(rate * k for rate, k in pairs), n)


def column_groups(table: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The overall metric bases and the per-kind metric bases present in a summary table."""
    means = [c[:-5] for c in (table[0] if table else ()) if c.endswith("_mean")]
    return list(SUMMARY_METRICS), [b for b in means if b not in SUMMARY_METRICS]


def robustness_matrix(
    rows: Sequence[dict[str, Any]],
) -> tuple[list[str], list[str], list[list[dict[str, Any]]]]:
    """Mean attack success rate per method and attack.

    Args:
        rows: results rows.

    Returns:
        ``(methods, attacks, values)``: method names, attack names (first-seen order) and
        ``values[i][j] = {"asr", "asr_std", "pre_asr", "n", "examples"}`` where ``asr`` and
        ``pre_asr`` are means over the method's cells (``None`` if the pair never ran), ``n`` the
        number of cells and ``examples`` up to five distinct successful adversarial prompts.
    """
    latest = [r for r in _latest(rows).values() if r.get("attack") is not None]
    keys, names = method_keys(latest)
    attacks: list[str] = []
    for r in latest:
        if r["attack"] not in attacks:
            attacks.append(str(r["attack"]))
    values = []
    for k in keys:
        line = []
        for a in attacks:
            mine = [r for r in latest if method_key(r) == k and r.get("attack") == a]
            asr, asr_std = mean_std([r["value"] for r in mine if r.get("metric") == "asr"])
            pre, _ = mean_std([r["value"] for r in mine if r.get("metric") == "pre_asr"])
            examples: list[str] = []
            for r in mine:
                for p in r.get("prompts") or []:
                    if str(p) not in examples and len(examples) < 5:
                        examples.append(str(p))
            n = len({r.get("cell") for r in mine if r.get("metric") == "asr"})
            line.append(
                {"asr": asr, "asr_std": asr_std, "pre_asr": pre, "n": n, "examples": examples}
            )
        values.append(line)
    return [names[k] for k in keys], attacks, values


def sequential_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sequential unlearning per method and step: UA of each concept erased so far, retention.

    Args:
        rows: results rows; only ``kind == "sequential"`` rows are used.

    Returns:
        Display rows ``{"method", "step", "erased", "UA <concept> (%)"..., "mean UA (%)",
        "IRA (%)", "CRA (%)", "retain (%)"}``, values as text (mean over seeds), ordered by method
        and step; empty when there are no sequential rows. A concept not yet erased at a step
        shows "–".
    """
    latest = {
        (r.get("cell"), r.get("metric"), r.get("step"), r.get("concept")): r
        for r in _ok(rows)
        if r.get("kind") == SEQUENTIAL
    }  # a re-recorded cell: its last row per step and concept wins
    seq = list(latest.values())
    if not seq:
        return []
    keys, names = method_keys(seq)
    concepts: list[str] = []
    for r in seq:
        if r.get("metric") == "seq_ua_concept" and str(r.get("concept")) not in concepts:
            concepts.append(str(r.get("concept")))
    cols = {"seq_ua": "mean UA (%)", "seq_ira": "IRA (%)", "seq_cra": "CRA (%)",
            "seq_retain": "retain (%)"}  # fmt: skip
    out = []
    for k in keys:
        mine = [r for r in seq if method_key(r) == k]
        for step in sorted({r.get("step") for r in mine if r.get("step") is not None}):
            at = [r for r in mine if r.get("step") == step]
            line: dict[str, Any] = {"method": names[k], "step": str(step),
                                    "erased": str(at[0].get("erased", ""))}  # fmt: skip
            for c in concepts:
                vals = [r["value"] for r in at
                        if r.get("metric") == "seq_ua_concept" and r.get("concept") == c]  # fmt: skip
                line[f"UA {c} (%)"] = fmt(mean_std(vals)[0], "pct")
            for m, head in cols.items():
                line[head] = fmt(
                    mean_std([r["value"] for r in at if r.get("metric") == m])[0], "pct"
                )
            out.append(line)
    return out


def _decimals(v: float) -> int:
    a = abs(v)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def fmt(value: Any, kind: str = "num", ref: float | None = None) -> str:
    """One value as text.

    Args:
        value: a number (``None`` gives "–"; strings are returned as they are).
        kind: ``pct`` (a fraction shown in % with one decimal), ``size`` (KB shown as KB, MB or
            GB) or ``num`` (decimals by magnitude).
        ref: the number whose magnitude sets the decimals (a std is shown like its mean).

    Returns:
        The text.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or (isinstance(value, int) and kind == "num"):
        return str(value)
    v = float(value)
    r = v if ref is None else float(ref)
    if kind == "pct":
        return f"{100 * v:.1f}"
    if kind == "size":
        for unit, div in (("GB", 2**20), ("MB", 2**10), ("KB", 1)):
            if abs(r) >= div or unit == "KB":
                return f"{v / div:.{_decimals(r / div)}f} {unit}"
    return f"{v:.{_decimals(r)}f}"


def cell_text(row: dict[str, Any], base: str) -> str:
    """``"mean ± std"`` of one metric base in a summary row, formatted for display."""
    kind = SUMMARY_METRICS[base][3] if base in SUMMARY_METRICS else "pct"
    mean, std = row.get(f"{base}_mean"), row.get(f"{base}_std")
    if mean is None:
        return UNDEFINED if row.get(f"{base}_undefined") else MISSING
    text = fmt(mean, kind)
    text = text if std is None else f"{text} ± {fmt(std, kind, ref=mean)}"
    lo, hi = row.get(f"{base}_ci_low"), row.get(f"{base}_ci_high")
    if lo is not None and hi is not None:
        text += f" [{fmt(lo, 'pct')}–{fmt(hi, 'pct')}, n={row.get(f'{base}_n')}]"
    return text


def header_text(base: str) -> str:
    """Display header of a metric base (``style_ua`` -> ``style UA (%)``)."""
    if base in SUMMARY_METRICS:
        return SUMMARY_METRICS[base][2]
    kind, _, metric = base.rpartition("_")
    return f"{kind} {metric.upper()} (%)"


def display_columns(table: Sequence[dict[str, Any]], bases: Sequence[str] | None = None):
    """Headers and display rows of a table (mean/std pairs merged) for Markdown or HTML."""
    if bases is None:
        cols = list(table[0]) if table else []
        bases = [c[:-5] for c in cols if c.endswith("_mean") and f"{c[:-5]}_std" in cols]
        plain = [c for c in cols if not c.endswith(("_mean", "_std"))]
    else:
        plain = ["name", "n_cells", "n_failed"]
    if plain and {"name", "model", "label"} <= set(plain):
        plain = [c for c in plain if c not in ("model", "method", "label")]
    headers = [
        {"name": "method", "n_cells": "cells", "n_failed": "failed"}.get(c, c) for c in plain
    ]
    headers += [header_text(b) for b in bases]
    body = [[fmt(r.get(c)) for c in plain] + [cell_text(r, b) for b in bases] for r in table]
    return headers, body


def to_markdown(table: Sequence[dict[str, Any]], bases: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        table: a summary table (``<base>_mean`` / ``<base>_std`` pairs are merged into one
            ``mean ± std`` column) or any list of dicts with the same keys.
        bases: metric bases to show (default: all); with it, only name and counts are kept.

    Returns:
        The table text; ``"(no rows)"`` for an empty table.
    """
    if not table:
        return "(no rows)\n"
    headers, body = display_columns(table, bases)

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(headers), "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(out + [line(b) for b in body]) + "\n" + table_notes(body)


def table_notes(body: Sequence[Sequence[str]]) -> str:
    """Footnotes for the marks a displayed table uses (empty when it uses none)."""
    cells = [str(c) for b in body for c in b]
    notes = []
    if any(c == UNDEFINED for c in cells):
        notes.append(
            f"{UNDEFINED}: not defined for this world (CRA needs a second attribute, e.g. a "
            "style beside the object; a class-per-folder world has one)."
        )
    if any("n=" in c for c in cells):
        notes.append("[a–b, n=N]: 95% Wilson interval of the rate pooled over N images.")
    return "".join(f"\n{n}\n" for n in notes)


def write_csv(table: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write a table as CSV with raw numbers (``None`` becomes an empty field).

    Args:
        table: list of dicts; the columns are the union of their keys in first-seen order.
        path: output file.

    Returns:
        The path written.
    """
    cols: list[str] = []
    for r in table:
        cols += [c for c in r if c not in cols]
    if not cols:
        cols = list(ID_COLUMNS) + [f"{b}_{s}" for b in SUMMARY_METRICS for s in ("mean", "std")]
    p = Path(path)
    with p.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        for r in table:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in cols})
    return p
