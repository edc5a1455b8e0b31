"""Smoke benchmark on the tiny testbed: results, report, resumability, failure isolation."""

from __future__ import annotations

import json

import genunlearn as gu
from genunlearn.bench.results import read_rows


def _spec(model):
    return {
        "name": "smoke-test",
        "models": [str(model)],
        "methods": [
            "original",
            "negative_prompt",
            {"name": "negative_prompt", "overrides": {"bogus_key": 1}, "label": "broken"},
        ],
        "concepts": ["star"],
        "seeds": [0],
        "attacks": ["no_attack"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False},
        "attack_config": {"n_prompts": 2},
    }


def test_bench_records_resumes_and_isolates_failures(tiny_testbed, tmp_path):
    out = tmp_path / "res"
    path = gu.run_benchmark(_spec(tiny_testbed), out, progress=False, report=True)
    rows = read_rows(path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["label"] == "broken"
    assert "bogus_key" in failed[0]["error"]
    ok_cells = {r["cell"] for r in rows if r["status"] == "ok"}
    assert len(ok_cells) == 2
    metrics = {(r["label"], r["attack"], r["metric"]) for r in rows if r["status"] == "ok"}
    for label in ("original", "negative_prompt"):
        for m in ("ua", "ira", "cra", "seconds", "peak_memory_bytes", "storage_bytes"):
            assert (label, None, m) in metrics
        assert (label, "no_attack", "asr") in metrics
    assert (out / "report.html").is_file()
    html = (out / "report.html").read_text()
    assert "negative_prompt" in html and "bogus_key" in html

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("config.json")}
    path2 = gu.run_benchmark(_spec(tiny_testbed), out, progress=False)
    rows2 = read_rows(path2)
    new = rows2[len(rows) :]
    assert all(r["status"] == "failed" and r["label"] == "broken" for r in new)  # only the retry
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished cells untouched


def test_bench_spec_errors_are_clear(tmp_path):
    import pytest

    spec = tmp_path / "s.yaml"
    spec.write_text("methods: [original]\nconcepts: [star]\nattack: [no_attack]\n")
    with pytest.raises(gu.GenUnlearnError, match="unknown keys \\['attack'\\]"):
        gu.run_benchmark(spec, tmp_path / "o")
    spec.write_text(json.dumps({"methods": ["esd_x"], "concepts": ["star"]}))
    with pytest.raises(gu.GenUnlearnError, match="unknown method 'esd_x'"):
        gu.run_benchmark(spec, tmp_path / "o")


def test_bench_sequential_cells_rows_and_report(tiny_testbed, tmp_path):
    spec = {
        "name": "seq",
        "models": [str(tiny_testbed)],
        "methods": ["original"],
        "sequential": ["star", "striped"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1},
    }
    out = tmp_path / "seq"
    path = gu.run_benchmark(spec, out, progress=False, report=True)
    rows = read_rows(path)
    assert rows and all(r["status"] == "ok" and r["kind"] == "sequential" for r in rows)
    cells = {r["cell"] for r in rows}
    assert len(cells) == 1 and cells.pop().endswith("__original__seq-star+striped__s0")
    ua = [(r["step"], r["concept"]) for r in rows if r["metric"] == "seq_ua_concept"]
    assert ua == [(1, "star"), (2, "star"), (2, "striped")]
    assert {r["step"] for r in rows if r["metric"] == "seq_retain"} == {1, 2}
    assert all(r["genunlearn_version"] == rows[0]["genunlearn_version"] for r in rows)
    page = (out / "report.html").read_text()
    assert 'id="sequential"' in page and 'id="sequential-table"' in page
    assert "UA striped (%)" in page
    n = len(rows)
    gu.run_benchmark(spec, out, progress=False)
    assert len(read_rows(path)) == n  # the finished sequence is not run again


def test_bench_refuses_to_resume_another_versions_results(tiny_testbed, tmp_path):
    import pytest

    out = tmp_path / "old"
    out.mkdir()
    old = {"cell": "x", "model": "toy", "method": "original", "label": "original",
           "target": "star", "kind": "object", "seed": 0, "attack": None, "metric": "ua",
           "value": 0.1, "status": "ok", "genunlearn_version": "0.0.1"}  # fmt: skip
    (out / "results.jsonl").write_text(json.dumps(old) + "\n")
    with pytest.raises(gu.GenUnlearnError, match=r"written by genunlearn 0\.0\.1.*new output"):
        gu.run_benchmark(_spec(tiny_testbed), out, progress=False)
    from genunlearn.report.html import write_report

    with pytest.warns(UserWarning, match="0.0.1"):
        page = write_report(out, out / "report.html").read_text()
    assert 'id="version-warning"' in page


def test_bench_refuses_to_resume_cells_whose_configuration_changed(
    tiny_testbed, tmp_path, monkeypatch
):
    import pytest

    from genunlearn import registry

    spec = {**_spec(tiny_testbed), "methods": ["original", "negative_prompt"], "attacks": []}
    out = tmp_path / "res"
    path = gu.run_benchmark(spec, out, progress=False)
    rows = read_rows(path)
    assert all(r["fingerprint"] for r in rows)
    assert gu.run_benchmark(spec, out, progress=False) and len(read_rows(path)) == len(rows)

    # a retuned preset: the finished negative_prompt cell would now run differently
    entry = registry.get("method", "negative_prompt")
    monkeypatch.setitem(entry.presets, "toy", {"text": "something else"})
    with pytest.raises(gu.GenUnlearnError, match=r"negative_prompt__star__s0\. Resuming"):
        gu.run_benchmark(spec, out, progress=False)
    monkeypatch.undo()
    # an attack added to the grid: every finished cell lacks its rows
    with pytest.raises(gu.GenUnlearnError, match="another configuration"):
        gu.run_benchmark({**spec, "attacks": ["no_attack"]}, out, progress=False)
    assert len(read_rows(path)) == len(rows)  # nothing was appended or lost
