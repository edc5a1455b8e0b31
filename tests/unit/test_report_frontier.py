"""Report additions: the knob-sweep frontier, sequential tables and the results version check."""

from __future__ import annotations

import json
import warnings

import pytest

from genunlearn.bench.results import version_note
from genunlearn.report import frontier_plot, sequential_table, summary_table, write_report
from genunlearn.report.plots import frontier_series
from genunlearn.runs import version

STEPS = (100, 10, 50)  # written out of knob order on purpose


def _sweep_rows(with_overrides: bool = True):
    rows = []
    for steps in STEPS:
        for target in ("star", "striped"):
            ua = steps / 100 + (0.1 if target == "star" else 0.0)
            base = {"cell": f"esd{steps}-{target}", "model": "toy", "method": "esd",
                    "label": f"esd[steps={steps}]", "target": target, "kind": "object",
                    "seed": 0, "attack": None, "status": "ok",
                    "genunlearn_version": version()}  # fmt: skip
            if with_overrides:
                base["overrides"] = {"steps": steps, "lr": 1e-5}
            for metric, v in (("ua", ua), ("ira", 1 - ua / 2), ("cra", 0.9)):
                rows.append({**base, "metric": metric, "value": v})
    single = {"cell": "uce-star", "model": "toy", "method": "uce", "label": "uce",
              "target": "star", "kind": "object", "seed": 0, "attack": None, "status": "ok",
              "metric": "ua", "value": 0.5, "genunlearn_version": version()}  # fmt: skip
    return rows + [single]


@pytest.mark.parametrize("with_overrides", [True, False])
def test_frontier_orders_variants_by_knob_and_averages_cells(with_overrides):
    series = frontier_series(_sweep_rows(with_overrides))
    assert list(series) == ["esd"]  # a method with one variant has no frontier
    pts = series["esd"]
    assert [p["knob"] for p in pts] == ["steps=10", "steps=50", "steps=100"]
    for p, steps in zip(pts, (10, 50, 100), strict=True):
        ua = steps / 100 + 0.05  # mean over the two concepts
        assert p["ua"] == pytest.approx(ua) and p["ira"] == pytest.approx(1 - ua / 2)
        assert p["cra"] == pytest.approx(0.9) and p["n_cells"] == 2
    png = frontier_plot(_sweep_rows())
    assert png is not None and png.startswith(b"\x89PNG")
    assert frontier_plot(_sweep_rows()[-1:]) is None


def test_report_has_frontier_and_sequential_sections(tmp_path):
    seq = []
    for step, erased in ((1, "star"), (2, "dotted")):
        tag = {"cell": "s", "model": "toy", "method": "esd", "label": "esd", "target": "star+dotted",
               "kind": "sequential", "seed": 0, "attack": None, "status": "ok", "step": step,
               "erased": erased, "genunlearn_version": version()}  # fmt: skip
        seq.append({**tag, "metric": "seq_retain", "value": 0.9 - 0.1 * step})
        seq.append({**tag, "metric": "seq_ua", "value": 0.8})
        for c in ("star", "dotted")[:step]:
            v = 0.8 if c == erased else 0.6  # star rebounds at step 2
            seq.append({**tag, "metric": "seq_ua_concept", "concept": c, "value": v})
    rows = _sweep_rows() + seq
    table = sequential_table(rows)
    assert [(t["step"], t["erased"]) for t in table] == [("1", "star"), ("2", "dotted")]
    assert table[0]["UA star (%)"] == "80.0" and table[0]["UA dotted (%)"] == "–"
    assert table[1]["UA star (%)"] == "60.0" and table[1]["retain (%)"] == "70.0"
    # sequential rows stay out of the per-method summary
    assert [t["label"] for t in summary_table(rows)] == [
        "esd[steps=100]", "esd[steps=10]", "esd[steps=50]", "uce"
    ]  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one current version: no warning
        page = write_report(path, tmp_path / "r.html").read_text()
    for ident in ("frontier", "frontier-table", "sequential", "sequential-table"):
        assert f'id="{ident}"' in page
    assert 'id="version-warning"' not in page
    md = (tmp_path / "r.md").read_text()
    assert "## Erasure/retention frontier" in md and "## Sequential unlearning" in md


def test_version_note_on_mixed_and_foreign_rows():
    assert version_note([{"genunlearn_version": version()}]) is None
    mixed = version_note([{"genunlearn_version": version()}, {"metric": "ua"}])
    assert "mix" in mixed and "unknown (1 rows)" in mixed
    foreign = version_note([{"genunlearn_version": "0.0.1"}])
    assert "0.0.1" in foreign and "mix" not in foreign
