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
