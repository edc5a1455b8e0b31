"""Report: tables equal hand-computed statistics, the HTML page is self-contained and escaped,
and a real headless browser renders its tables."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import shutil
import statistics
import subprocess

import pytest
from PIL import Image

from genunlearn.report import robustness_matrix, summary_table, to_markdown, write_report
from genunlearn.report.plots import sequential_curves, sequential_series, tradeoff_scatter

KINDS = {"Cartoon": "style", "cat": "object"}
ERROR = 'RuntimeError: bad <tensor> & "shape" <script>alert(1)</script>'
PROMPT = "a <b>cat</b> & friends"


def _value(method: str, target: str, seed: int, metric: str) -> float:
    """Distinct, hand-checkable numbers per cell."""
    base = {"ua": 0.9, "ira": 0.8, "cra": 0.7, "fid": 20.0, "seconds": 10.0, "asr": 0.4}[metric]
    if method == "original":
        base = {"ua": 0.05, "asr": 0.9}.get(metric, base)
    return base + 0.01 * seed + (0.02 if target == "cat" else 0.0)


def _png(path, colour=(200, 30, 30)) -> None:
    img = Image.new("RGB", (16, 8), colour)
    img.putpixel((0, 0), (0, 0, 0))
    img.save(path)


def _rows(tmp_path):
    rows = []
    for method in ("original", "esd"):
        for target in ("Cartoon", "cat"):
            for seed in (0, 1):
                cell = f"toy-{method}-{target}-s{seed}"
                run_dir = tmp_path / "runs" / cell
                base = dict(
                    cell=cell, model="toy", method=method, label=method, target=target,
                    kind=KINDS[target], seed=seed, status="ok", error=None,
                    run_dir=str(run_dir), time="2025-01-01 00:00:00",
                )  # fmt: skip
                plain = {m: _value(method, target, seed, m) for m in ("ua", "ira", "cra", "fid")}
                plain["seconds"] = _value(method, target, seed, "seconds")
                plain["peak_memory_bytes"] = 2.0**20 * (100 + seed)
                if method == "esd":  # the original run stores no artifact: storage is missing
                    plain["storage_bytes"] = 2048.0
                for m, v in plain.items():
                    rows.append({**base, "attack": None, "metric": m, "value": v})
                a = {**base, "attack": "prompt_search"}
                rows.append({**a, "metric": "pre_asr", "value": 0.5})
                rows.append({**a, "metric": "asr", "value": _value(method, target, seed, "asr")})
                rows.append({**a, "metric": "examples", "value": None, "prompts": [PROMPT]})
                if seed == 0 and target == "Cartoon":
                    run_dir.mkdir(parents=True)
                    _png(run_dir / "samples.png", (200, 30, 30) if method == "esd" else (0, 0, 200))
                    if method == "esd":
                        _png(run_dir / "attack_prompt_search.png", (20, 160, 20))
    rows.append(
        dict(cell="toy-sdd-dog-s0", model="toy", method="sdd", label="sdd", target="dog",
             kind="object", seed=0, attack=None, metric="error", value=None, status="failed",
             error=ERROR, run_dir=str(tmp_path / "runs" / "x"), time="2025-01-01 00:00:01")
    )  # fmt: skip
    return rows


@pytest.fixture()
def results(tmp_path):
    rows = _rows(tmp_path)
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _hand(method, metric, target=None):
    vals = [
        _value(method, t, s, metric)
        for t in ("Cartoon", "cat")
        for s in (0, 1)
        if target in (None, t)
    ]
    return statistics.mean(vals), statistics.stdev(vals)


def test_summary_table_matches_hand_computed_statistics(results):
    _, rows = results
    table = {r["label"]: r for r in summary_table(rows)}
    assert list(table) == ["original", "esd", "sdd"]
    for method in ("original", "esd"):
        r = table[method]
        assert r["n_cells"] == 4 and r["n_failed"] == 0
        for m in ("ua", "ira", "cra", "fid", "seconds"):
            mean, std = _hand(method, m)
            assert r[f"{m}_mean"] == pytest.approx(mean) and r[f"{m}_std"] == pytest.approx(std)
        assert r["peak_memory_mb_mean"] == pytest.approx(100.5)
        mean, std = _hand(method, "ua", "Cartoon")
        assert r["style_ua_mean"] == pytest.approx(mean) and r["style_ua_std"] == pytest.approx(std)
        assert r["object_cra_mean"] == pytest.approx(_hand(method, "cra", "cat")[0])
    assert table["esd"]["storage_kb_mean"] == pytest.approx(2.0)
    assert table["original"]["storage_kb_mean"] is None
    assert table["sdd"]["n_failed"] == 1 and table["sdd"]["ua_mean"] is None
    md = to_markdown(list(table.values()))
    assert "–" in md and "| original |" in md and "± " in md


def test_robustness_matrix_is_the_mean_asr(results):
    _, rows = results
    methods, attacks, values = robustness_matrix(rows)
    assert methods == ["original", "esd"] and attacks == ["prompt_search"]
    esd = values[methods.index("esd")][0]
    assert esd["asr"] == pytest.approx(_hand("esd", "asr")[0])
    assert esd["pre_asr"] == pytest.approx(0.5) and esd["n"] == 4
    assert esd["examples"] == [PROMPT]


def test_html_is_self_contained_escaped_and_has_tables(results, tmp_path):
    path, rows = results
    out = write_report(tmp_path, tmp_path / "out" / "report.html")
    page = out.read_text()
    assert html.escape(ERROR) in page and "<script>" not in page and "<tensor>" not in page
    assert html.escape(PROMPT) in page and "<b>cat</b>" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 4  # scatter, before (original), after (esd), esd's attack grid
    assert "before: original" in page and "attack: prompt_search" in page
    for u in uris:
        assert Image.open(io.BytesIO(base64.b64decode(u))).size[0] > 0
    for ident in ("summary", "summary-by-kind", "robustness", "tradeoff", "samples", "failures"):
        assert f'id="{ident}"' in page
    assert 'id="sequential"' not in page  # no seq_* rows: the section is skipped
    with (tmp_path / "out" / "report.csv").open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert {"name", "ua_mean", "ua_std", "cra_mean", "storage_kb_mean"} <= set(csv_rows[0])
    by_name = {r["name"]: r for r in csv_rows}
    assert float(by_name["esd"]["ua_mean"]) == pytest.approx(_hand("esd", "ua")[0])
    assert by_name["original"]["storage_kb_mean"] == ""
    md = (tmp_path / "out" / "report.md").read_text()
    assert "prompt_search" in md and "esd" in md


def test_empty_results_say_so(tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    out = write_report(tmp_path / "results.jsonl", tmp_path / "r.html")
    assert "no results yet" in out.read_text()
    with (tmp_path / "r.csv").open(newline="") as fh:
        assert "ua_mean" in next(csv.reader(fh))
    assert tradeoff_scatter([]) is None and sequential_curves([]) is None


def test_sequential_series_and_plots(results):
    _, rows = results
    seq = [
        {"cell": f"c{s}", "model": "toy", "method": "esd", "label": "esd", "status": "ok",
         "metric": m, "step": step, "value": v + 0.1 * s}
        for s in (0, 1)
        for step in (1, 2)
        for m, v in (("seq_ua", 0.5 * step), ("seq_retain", 1.0 - 0.1 * step))
    ]  # fmt: skip
    series = sequential_series(seq)
    assert series["esd"]["seq_ua"] == [(1, pytest.approx(0.55)), (2, pytest.approx(1.05))]
    assert series["esd"]["seq_retain"][1] == (2, pytest.approx(0.85))
    for png in (sequential_curves(seq), tradeoff_scatter(summary_table(rows))):
        assert png is not None and png.startswith(b"\x89PNG")


def _chromium(tmp_path) -> list[str]:
    """Headless Chromium's command line with a throw-away profile (skips without chromium)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed")
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip


def test_browser_renders_the_report(results, tmp_path):
    out = write_report(tmp_path, tmp_path / "report.html")
    flags = _chromium(tmp_path)
    dom = subprocess.run(
        flags + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=60
    ).stdout
    for ident in ("summary", "robustness", "failures"):
        assert re.search(rf'<table id="{ident}"', dom), ident
    summary = re.search(r'<table id="summary">(.*?)</table>', dom, re.S).group(1)
    assert summary.count("<tr>") == 4  # header + original, esd, sdd
    assert "esd" in summary and "original" in summary
    robust = re.search(r'<table id="robustness">(.*?)</table>', dom, re.S).group(1)
    asr = f"{100 * _hand('esd', 'asr')[0]:.1f}"
    assert asr in robust and "pre 50.0" in robust
    assert html.escape(ERROR, quote=False) in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        flags + [f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
        capture_output=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert shot.is_file()
    lo, hi = Image.open(shot).convert("L").getextrema()
    assert hi - lo > 50  # not a blank page


BASELINES = {"no_attack", "seed_search", "random_tokens"}


def test_smoke_benchmark_robustness_matrix_renders_in_the_browser(tiny_testbed, tmp_path):
    """configs/bench/smoke.yaml (on the tiny testbed) has a real attack, and the report built
    from its results shows the robustness matrix (methods x attacks) in a real browser."""
    import pathlib

    import yaml

    import genunlearn as gu
    from genunlearn.bench.results import read_rows

    flags = _chromium(tmp_path)  # skips before the benchmark runs when chromium is absent
    root = pathlib.Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "configs" / "bench" / "smoke.yaml").read_text())
    real = set(spec["attacks"]) - BASELINES
    assert real, "the smoke benchmark must include one attack that is not a baseline"
    spec["models"] = [str(tiny_testbed)]
    spec["eval"] = {**spec["eval"], "fid": False}
    out = tmp_path / "smoke"
    results = gu.run_benchmark(spec, out, progress=False)
    write_report(results, out / "report.html")
    rows = read_rows(results)
    assert rows and not [r for r in rows if r["status"] == "failed"]
    asr = {(r["label"], r["attack"]) for r in rows if r["metric"] == "asr"}
    methods = [m if isinstance(m, str) else m.get("label") or m["name"] for m in spec["methods"]]
    assert asr == {(m, a) for m in methods for a in spec["attacks"]}
    dom = subprocess.run(
        flags + ["--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    robust = re.search(r'<table id="robustness">(.*?)</table>', dom, re.S)
    assert robust, "the robustness matrix is missing from the rendered report"
    head = re.search(r"<thead>(.*?)</thead>", robust.group(1), re.S).group(1)
    assert [h for h in re.findall(r"<th>(.*?)</th>", head)] == ["method", *spec["attacks"]]
    body = re.findall(r"<tr>(.*?)</tr>", robust.group(1).split("</thead>")[1], re.S)
    assert [re.search(r"<td>(.*?)</td>", r).group(1) for r in body] == methods
    assert all("(pre " in r for r in body)  # every cell shows ASR with its pre-ASR
