"""Smoke benchmark on the tiny testbed: results, report, resumability, failure isolation,
paths kept inside the output directory, one benchmark per directory, mistakes refused early."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import sys
import threading
import time

import pytest

import genunlearn as gu
from genunlearn.bench.results import read_rows
from genunlearn.bench.runner import NoCellFinished
from genunlearn.report.html import write_report
from genunlearn.types import ErasureResult


def _boom(model, task, cfg):
    raise RuntimeError("boom: this method always fails")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Config keys named like ``erase``'s and ``erase_sequence``'s own arguments."""

    seed: int = 0
    progress: bool = False


def _register(monkeypatch, name, fn, config=None):
    """Register a test-only method for this test (in-process cells see it)."""
    from genunlearn import registry

    entry = registry.get("method", "original")
    entry = dataclasses.replace(entry, name=name, fn=fn, config=config or entry.config)
    monkeypatch.setitem(registry._REGISTRIES["method"], name, entry)


def _spec(model):
    return {
        "name": "smoke-test",
        "models": [str(model)],
        "methods": [
            "original",
            "negative_prompt",
            {"name": "boom", "label": "broken"},
        ],
        "concepts": ["star"],
        "seeds": [0],
        "attacks": ["no_attack"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False},
        "attack_config": {"n_prompts": 2},
    }


def test_bench_records_resumes_and_isolates_failures(tiny_testbed, tmp_path, monkeypatch):
    _register(monkeypatch, "boom", _boom)
    out = tmp_path / "res"
    path = gu.run_benchmark(_spec(tiny_testbed), out, progress=False)
    assert path == out / "results.jsonl" and not (out / "report.html").exists()  # results only
    rows = read_rows(path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["label"] == "broken"
    assert "boom: this method always fails" in failed[0]["error"]
    ok_cells = {r["cell"] for r in rows if r["status"] == "ok"}
    assert len(ok_cells) == 2
    metrics = {(r["label"], r["attack"], r["metric"]) for r in rows if r["status"] == "ok"}
    for label in ("original", "negative_prompt"):
        for m in ("ua", "ira", "cra", "seconds", "peak_memory_bytes", "storage_bytes"):
            assert (label, None, m) in metrics
        assert (label, "no_attack", "asr") in metrics
    html = write_report(path, out / "report.html").read_text()
    assert "negative_prompt" in html and "this method always fails" in html

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("config.json")}
    path2 = gu.run_benchmark(_spec(tiny_testbed), out, progress=False)
    rows2 = read_rows(path2)
    new = rows2[len(rows) :]
    assert all(r["status"] == "failed" and r["label"] == "broken" for r in new)  # only the retry
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished cells untouched


def test_bench_spec_errors_are_clear(tmp_path):
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
    path = gu.run_benchmark(spec, out, progress=False)
    rows = read_rows(path)
    assert rows and all(r["status"] == "ok" and r["kind"] == "sequential" for r in rows)
    cells = {r["cell"] for r in rows}
    assert len(cells) == 1 and cells.pop().endswith("__original__seq-star+striped__s0")
    ua = [(r["step"], r["concept"]) for r in rows if r["metric"] == "seq_ua_concept"]
    assert ua == [(1, "star"), (2, "star"), (2, "striped")]
    assert {r["step"] for r in rows if r["metric"] == "seq_retain"} == {1, 2}
    assert all(r["genunlearn_version"] == rows[0]["genunlearn_version"] for r in rows)
    page = write_report(out, out / "report.html").read_text()
    assert 'id="sequential"' in page and 'id="sequential-table"' in page
    assert "UA striped (%)" in page
    n = len(rows)
    gu.run_benchmark(spec, out, progress=False)
    assert len(read_rows(path)) == n  # the finished sequence is not run again


def test_bench_refuses_to_resume_another_versions_results(tiny_testbed, tmp_path, monkeypatch):
    _register(monkeypatch, "boom", _boom)
    out = tmp_path / "old"
    out.mkdir()
    old = {"cell": "x", "model": "toy", "method": "original", "label": "original",
           "target": "star", "kind": "object", "seed": 0, "attack": None, "metric": "ua",
           "value": 0.1, "status": "ok", "genunlearn_version": "0.0.1"}  # fmt: skip
    (out / "results.jsonl").write_text(json.dumps(old) + "\n")
    with pytest.raises(gu.GenUnlearnError, match=r"written by genunlearn 0\.0\.1.*new output"):
        gu.run_benchmark(_spec(tiny_testbed), out, progress=False)
    with pytest.warns(UserWarning, match="0.0.1"):
        page = write_report(out, out / "report.html").read_text()
    assert 'id="version-warning"' in page


def test_bench_refuses_to_resume_cells_whose_configuration_changed(
    tiny_testbed, tmp_path, monkeypatch
):
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


def _tree(root, skip):
    """Every path under ``root`` outside ``skip``, with the bytes of each file."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
        if skip not in p.parents and p != skip
    }


def test_bench_paths_from_user_text_stay_inside_the_output_directory(tiny_testbed, tmp_path):
    """Concepts that read as paths must not write, or delete, anything outside OUT/runs."""
    out = tmp_path / "a" / "res"
    out.mkdir(parents=True)
    # OUT/runs/<model>__original__a_star_/../../../../NAME__s0 is tmp_path/NAME__s0: plant a
    # user's directory there that looks like an unfinished run, and files next to OUT
    planted = tmp_path / "elsewhere__s0"
    planted.mkdir()
    (planted / "INCOMPLETE").write_text("started")
    (planted / "config.json").write_text("{}")
    (planted / "thesis.tex").write_text("a user's file")
    (tmp_path / "a" / "notes.txt").write_text("next to the output directory")
    before = _tree(tmp_path, out)
    spec = {
        "models": [str(tiny_testbed)],
        "methods": ["original"],
        "concepts": ["star", "a star /../../../../elsewhere", "a star /../../../../fresh"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1},
    }
    for _ in range(2):  # the second run retries (replaces) every cell that failed
        rows = read_rows(gu.run_benchmark(spec, out, progress=False))
    assert _tree(tmp_path, out) == before  # nothing outside OUT was created, changed or removed
    runs = (out / "runs").resolve()
    dirs = {r["run_dir"] for r in rows}
    assert len(dirs) == 3
    for d in dirs:
        assert (tmp_path / d).resolve().parent == runs
    assert {p.name for p in runs.iterdir()} == {r["cell"] for r in rows}


def test_bench_typos_are_refused_before_any_cell_runs(tiny_testbed, tmp_path, monkeypatch):
    _register(monkeypatch, "boom", _boom)
    base = _spec(tiny_testbed)
    typos = [
        ({"methods": ["original", {"name": "negative_prompt", "overrides": {"bogus_key": 1}}]},
         r"method 'negative_prompt-[0-9a-f]+': .*unknown key 'bogus_key'"),
        ({"methods": ["original", {"name": "negative_prompt", "preset": "tyo"}]},
         r"negative_prompt has no preset 'tyo'"),
        ({"eval": {"protocol": "unlearncanvas", "n_per_promt": 1}}, r"unknown key 'n_per_promt'"),
        ({"attack_config": {"n_promts": 2}}, r"attack_config key 'n_promts'"),
        ({"methods": "original"}, r"'methods' must be a list"),
        ({"seeds": ["abc"]}, r"'seeds' must be integers in 0 \.\. 2\*\*63-1"),
    ]  # fmt: skip
    for i, (extra, match) in enumerate(typos):
        out = tmp_path / f"o{i}"
        with pytest.raises(gu.GenUnlearnError, match=match):
            gu.run_benchmark({**base, **extra}, out, progress=False)
        assert not out.exists(), extra  # no cell ran, and nothing is left behind


def test_bench_overrides_named_like_erase_arguments_reach_the_method(
    tiny_testbed, tmp_path, monkeypatch
):
    """``seed`` and ``progress`` are config keys of some methods; in a benchmark they must reach
    the method's config, in single and sequential cells alike, not clash with erase's own."""
    seen = []

    def probe(model, task, cfg):
        seen.append(cfg)
        return ErasureResult()

    _register(monkeypatch, "probe", probe, ProbeConfig)
    spec = {
        "models": [str(tiny_testbed)],
        "methods": [{"name": "probe", "overrides": {"seed": 7, "progress": True}}],
        "concepts": ["star"],
        "sequential": ["star", "striped"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1},
    }
    rows = read_rows(gu.run_benchmark(spec, tmp_path / "o", progress=False))
    assert rows and all(r["status"] == "ok" for r in rows), rows[0].get("error")
    assert seen and all(c == ProbeConfig(seed=7, progress=True) for c in seen)
    assert len(seen) == 3  # the single cell and both steps of the sequence


def test_bench_where_every_cell_failed_is_an_error(tiny_testbed, tmp_path, monkeypatch, capsys):
    import yaml

    from genunlearn.cli.main import main

    _register(monkeypatch, "boom", _boom)
    spec = {
        "name": "doomed",
        "models": [str(tiny_testbed)],
        "methods": [{"name": "boom", "label": "broken"}],
        "concepts": ["star", "striped"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1},
    }
    out = tmp_path / "o"
    with pytest.raises(NoCellFinished, match=r"'doomed': all 2 cells failed.*boom") as e:
        gu.run_benchmark(spec, out, progress=False)
    assert isinstance(e.value, gu.GenUnlearnError) and e.value.results == out / "results.jsonl"
    rows = read_rows(out)  # the rows are written before the error
    assert len(rows) == 2 and all(r["status"] == "failed" for r in rows)
    # one cell of the grid finished: a partial failure is not an error
    partial = {**spec, "methods": ["original", {"name": "boom", "label": "broken"}]}
    assert gu.run_benchmark(partial, tmp_path / "p", progress=False).is_file()

    path = tmp_path / "doomed.yaml"
    path.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["--quiet", "bench", str(path), "--out", str(tmp_path / "c"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "all 2 cells failed" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c" / "report.html").exists()
    # without --no-report the CLI still writes the report, which shows the failures
    assert main(["--quiet", "bench", str(path), "--out", str(tmp_path / "d")]) == 2
    printed = capsys.readouterr()
    assert "all 2 cells failed" in printed.err and len(printed.err.strip().splitlines()) == 1
    assert f"report: {tmp_path / 'd' / 'report.html'}" in printed.out
    assert "this method always fails" in (tmp_path / "d" / "report.html").read_text()


def test_cli_bench_writes_the_report_after_the_grid(tiny_testbed, tmp_path, capsys):
    """The library writes results only; `genunlearn bench` writes the report from them."""
    import yaml

    from genunlearn.cli.main import main

    spec = {
        "models": [str(tiny_testbed)],
        "methods": ["original"],
        "concepts": ["star"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["--quiet", "bench", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"results: {out / 'results.jsonl'}", f"report: {out / 'report.html'}"]
    page = (out / "report.html").read_text()
    assert 'id="summary"' in page and "original" in page
    assert (out / "report.csv").is_file() and (out / "report.md").is_file()
    # resumed with --no-report: nothing to run, and the report is not touched
    stamp = (out / "report.html").stat().st_mtime_ns
    assert main(["--quiet", "bench", str(path), "--out", str(out), "--no-report"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"results: {out / 'results.jsonl'}"]
    assert (out / "report.html").stat().st_mtime_ns == stamp


# Another genunlearn bench, as the lock protocol sees it: an exclusive flock on OUT/.lock with the
# holder's pid written into the file, held until its stdin closes.
HOLD = (
    "import fcntl, os, sys\n"
    "f = open(sys.argv[1], 'a+')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "f.seek(0); f.truncate(); f.write(f'{os.getpid()}\\n'); f.flush()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def _holder(out):
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout.readline().strip() == "held"
        yield p
    finally:
        p.stdin.close()
        p.wait(timeout=60)


def test_a_second_benchmark_on_one_directory_is_refused(tiny_testbed, tmp_path, capsys):
    import yaml

    from genunlearn.cli.main import main

    spec = {
        "models": [str(tiny_testbed)],
        "methods": ["original"],
        "concepts": ["star"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1},
    }
    out = tmp_path / "o"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    with _holder(out) as p:
        with pytest.raises(
            gu.GenUnlearnError, match=rf"{re.escape(str(out))} is in use .*pid {p.pid}\b.*wait"
        ):
            gu.run_benchmark(spec, out, progress=False)
        capsys.readouterr()
        assert main(["--quiet", "bench", str(path), "--out", str(out), "--no-report"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {p.pid}" in err and "--wait" in err and len(err.splitlines()) == 1
        assert sorted(q.name for q in out.iterdir()) == [".lock"]  # no cell ran, nothing written
    # the holder is gone: the OS released its lock, so the benchmark runs
    rows = read_rows(gu.run_benchmark(spec, out, progress=False))
    assert rows and all(r["status"] == "ok" for r in rows)


def test_bench_lock_waits_for_the_holder_and_a_dead_holder_never_blocks(tmp_path):
    import os
    import signal

    from genunlearn.bench.runner import lock_out_dir

    out = tmp_path / "o"
    with _holder(out) as p:
        delay = 1.5
        threading.Timer(delay, p.stdin.close).start()  # the holder finishes after `delay`
        t0 = time.monotonic()
        with lock_out_dir(out, wait=True):
            assert time.monotonic() - t0 >= delay * 0.9
            assert (out / ".lock").read_text().split() == [str(os.getpid())]
    # a holder killed outright leaves its pid in the file, but the OS dropped its lock
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert (out / ".lock").read_text().split() == [str(p.pid)]
    with lock_out_dir(out):  # no wait: it would raise if the dead holder still blocked
        assert (out / ".lock").read_text().split() == [str(os.getpid())]
