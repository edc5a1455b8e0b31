"""Report figures (matplotlib, Agg backend), each returned as PNG bytes.

- :func:`tradeoff_scatter`: erasure (UA) against retention (mean of IRA and CRA), one labelled
  point per method, from a summary table.
- :func:`sequential_curves`: sequential unlearning, UA of the concepts erased so far and retain
  accuracy against the step, from rows with metric ``seq_ua`` / ``seq_retain``.
- :func:`frontier_plot`: for every method run as several labelled override variants (a knob
  sweep such as ``experiments/frontier.py`` writes), UA against IRA and against CRA per variant, in knob
  order, so the sweep shows the erasure/retention frontier.

Both return ``None`` when the rows hold nothing to draw, so that the report can skip the section.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from genunlearn.report.tables import (  # noqa: E402
    mean_std,
    method_key,
    method_keys,
    summary_table,
)


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


_LABEL_KNOB = re.compile(r"\[([^\]=]+)=([^\]]*)\]$")  # "esd[steps=50]" (experiments/frontier.py)


def _variant_overrides(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Overrides per ``(model, label)``: the rows' ``overrides``, else ``name[knob=value]``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        k = method_key(r)
        if k in out:
            continue
        if isinstance(r.get("overrides"), dict):
            out[k] = dict(r["overrides"])
        else:
            m = _LABEL_KNOB.search(k[1])
            out[k] = {m.group(1): _number(m.group(2))} if m else {}
    return out


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def frontier_series(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Variants of every method that was run with at least two labels, in knob order.

    Args:
        rows: results rows.

    Returns:
        ``{method name: [{"label", "knob", "ua", "ira", "cra", "n_cells"}, ...]}`` with the means
        over each variant's cells; ``knob`` is the text of the overrides that differ between
        the variants (e.g. ``"steps=50"``). Variants are sorted by the knob's value when exactly
        one numeric override varies, else kept in first-seen order. Methods with one variant are
        left out.
    """
    table = [t for t in summary_table(rows) if t.get("ua_mean") is not None]
    overrides = _variant_overrides(rows)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in table:
        groups[(t["model"], str(t["method"]))].append(t)
    multi_model = len({m for m, _ in groups}) > 1
    out: dict[str, list[dict[str, Any]]] = {}
    for (model, method), variants in groups.items():
        if len(variants) < 2:
            continue
        ovs = [overrides.get((model, v["label"]), {}) for v in variants]
        keys = sorted({k for o in ovs for k in o})
        varying = [k for k in keys if len({_key(o.get(k)) for o in ovs}) > 1]
        pts = [
            {
                "label": v["label"],
                "knob": ", ".join(f"{k}={o.get(k)}" for k in varying) or v["label"],
                "ua": v["ua_mean"],
                "ira": v["ira_mean"],
                "cra": v["cra_mean"],
                "n_cells": v["n_cells"],
                "_sort": o.get(varying[0]) if len(varying) == 1 else None,
            }
            for v, o in zip(variants, ovs, strict=True)
        ]
        if all(isinstance(p["_sort"], (int, float)) for p in pts):
            pts.sort(key=lambda p: p["_sort"])
        for p in pts:
            del p["_sort"]
        out[f"{method} ({model})" if multi_model else method] = pts
    return out


def frontier_plot(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Erasure/retention frontier: per method, UA (x) against IRA (circles) and CRA (squares).

    Args:
        rows: results rows of a knob sweep (one method, several labelled override variants).

    Returns:
        PNG bytes, or ``None`` when no method has two or more variants.
    """
    series = frontier_series(rows)
    if not series:
        return None
    n = len(series)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.4 * nrows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, series.items(), strict=False):
        xs = [100 * p["ua"] for p in pts]
        for metric, style, colour in (("ira", "o-", "C0"), ("cra", "s--", "C1")):
            ys = [100 * p[metric] if p[metric] is not None else float("nan") for p in pts]
            ax.plot(xs, ys, style, color=colour, label=metric.upper())
            for x, y, p in zip(xs, ys, pts, strict=True):
                if metric == "ira" and not math.isnan(y):
                    ax.annotate(p["knob"], (x, y), textcoords="offset points", xytext=(5, 5),
                                fontsize=8)  # fmt: skip
        ax.set_xlim(-5, 105)
        ax.set_ylim(-5, 105)
        ax.set_xlabel("unlearning accuracy UA (%)  → better erasure")
        ax.set_ylabel("retention (%)")
        ax.set_title(f"{name}: frontier over {len(pts)} variants", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _png(fig)
