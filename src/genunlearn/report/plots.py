"""Report figures (matplotlib, Agg backend), each returned as PNG bytes.

- :func:`tradeoff_scatter`: erasure (UA) against retention (mean of IRA and CRA), one labelled
  point per method, from a summary table.
- :func:`sequential_curves`: sequential unlearning, UA of the concepts erased so far and retain
  accuracy against the step, from rows with metric ``seq_ua`` / ``seq_retain``.

Both return ``None`` when the rows hold nothing to draw, so that the report can skip the section.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from genunlearn.report.tables import mean_std, method_key, method_keys  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _retention(row: dict[str, Any]) -> float | None:
    vals = [row.get(f"{m}_mean") for m in ("ira", "cra")]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def tradeoff_scatter(table: Sequence[dict[str, Any]]) -> bytes | None:
    """Erasure-vs-retention scatter: x = UA, y = mean of IRA and CRA, one point per method.

    Args:
        table: a summary table from :func:`genunlearn.report.tables.summary_table`.

    Returns:
        PNG bytes, or ``None`` when no method has both a UA and an IRA or CRA.
    """
    points = [
        (r["name"], r["ua_mean"], _retention(r))
        for r in table
        if r.get("ua_mean") is not None and _retention(r) is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (name, x, y) in enumerate(points):
        ax.scatter([100 * x], [100 * y], s=60, color=f"C{i % 10}", zorder=3)
        ax.annotate(name, (100 * x, 100 * y), textcoords="offset points", xytext=(6, 5), fontsize=9)
    ax.set_xlabel("unlearning accuracy UA (%)  → better erasure")
    ax.set_ylabel("retention, mean of IRA and CRA (%)")
    ax.set_xlim(-5, 105)
    ax.set_ylim(-5, 105)
    ax.grid(True, alpha=0.3)
    ax.set_title("erasure vs retention (ideal: top right)")
    return _png(fig)


def sequential_series(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[tuple]]]:
    """Mean ``seq_ua`` / ``seq_retain`` per method and step.

    The step is the row's ``step`` key, or else the row's position among the rows of the same
    cell and metric.

    Args:
        rows: results rows.

    Returns:
        ``{method name: {"seq_ua": [(step, mean)], "seq_retain": [(step, mean)]}}`` with steps
        ascending; empty when no row has either metric.
    """
    seq = [
        r
        for r in rows
        if r.get("status", "ok") == "ok"
        and r.get("metric") in ("seq_ua", "seq_retain")
        and r.get("value") is not None
    ]
    if not seq:
        return {}
    keys, names = method_keys(seq)
    position: dict[tuple, int] = defaultdict(int)
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in seq:
        pos_key = (r.get("cell"), r.get("metric"))
        step = r.get("step")
        if step is None:
            step = position[pos_key]
        position[pos_key] += 1
        k = method_key(r)
        acc[(k, r["metric"], step)].append(r["value"])
    out: dict[str, dict[str, list[tuple]]] = {}
    for k in keys:
        series = {}
        for metric in ("seq_ua", "seq_retain"):
            pts = [(s, mean_std(v)[0]) for (kk, m, s), v in acc.items() if kk == k and m == metric]
            series[metric] = sorted(pts)
        out[names[k]] = series
    return out


def sequential_curves(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Sequential-unlearning curves: UA of erased-so-far (solid) and retain accuracy (dashed).

    Args:
        rows: results rows; only those with metric ``seq_ua`` or ``seq_retain`` are used.

    Returns:
        PNG bytes, or ``None`` when there are no such rows.
    """
    series = sequential_series(rows)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, s) in enumerate(series.items()):
        for metric, style, what in (("seq_ua", "-", "UA"), ("seq_retain", "--", "retain")):
            if s[metric]:
                xs, ys = zip(*s[metric], strict=True)
                ax.plot(
                    xs,
                    [100 * y for y in ys],
                    style,
                    marker="o",
                    color=f"C{i % 10}",
                    label=f"{name} {what}",
                )
    ax.set_xlabel("step (concepts erased so far)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-5, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("sequential unlearning")
    return _png(fig)
