"""Rates in the report carry their image count and a 95% interval; undefined rates say so."""

from __future__ import annotations

import pytest

from genunlearn.report import tables


def _rows(cell, kind, **metrics):
    base = {"cell": cell, "model": "m", "method": "esd", "label": "esd", "kind": kind,
            "attack": None, "status": "ok"}  # fmt: skip
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]


def test_wilson_interval_matches_the_closed_form():
    lo, hi = tables.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = tables.wilson_interval(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    lo, hi = tables.wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)


def test_rates_are_pooled_over_cells_by_their_counts():
    rows = _rows("a", "object", ua=1.0, ua_n=30) + _rows("b", "object", ua=0.5, ua_n=10)
    n, (lo, hi) = tables.pooled_rate(rows, "ua")
    assert n == 40
    assert (lo, hi) == pytest.approx(tables.wilson_interval(35, 40))  # not the mean 0.75
    (row,) = tables.summary_table(rows)
    assert row["ua_n"] == 40 and row["ua_ci_low"] == pytest.approx(lo)
    assert "n=40" in tables.cell_text(row, "ua")


def test_a_rate_the_world_does_not_define_is_marked_not_missing():
    rows = _rows("a", "class", ua=0.9, ua_n=60, ira=0.8, ira_n=60)
    (row,) = tables.summary_table(rows)
    assert tables.cell_text(row, "cra") == tables.UNDEFINED
    md = tables.to_markdown([row], ["ua", "ira", "cra"])
    assert "not defined for this world" in md
    # a method with no results at all is missing, not undefined
    assert tables.cell_text({"cra_mean": None}, "cra") == tables.MISSING
