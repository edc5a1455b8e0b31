"""The --ray path: a local Ray cluster runs the same cells and writes the same rows as in-process."""

from __future__ import annotations

import importlib.util

import pytest

import genunlearn as gu
from genunlearn.bench.results import read_rows

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install 'genunlearn[ray]')",
)


def _volatile(metric: str) -> bool:
    """Metrics that measure the machine rather than the model (wall times, memory)."""
    return metric == "seconds" or metric.endswith("_seconds") or "memory" in metric


def _comparable(rows):
    out = set()
    for r in rows:
        if _volatile(r["metric"]):
            continue
        value = r["value"] if r["value"] is None else round(r["value"], 9)
        out.add((r["cell"], r["attack"], r["metric"], value, r["status"],
                 tuple(r.get("prompts") or ())))  # fmt: skip
    return out


def test_ray_gives_the_same_rows_as_in_process(tiny_testbed, tmp_path):
    spec = {
        "name": "ray-smoke",
        "models": [str(tiny_testbed)],
        "methods": ["original", "negative_prompt"],
        "concepts": ["star"],
        "seeds": [0],
        "attacks": ["no_attack"],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False},
        "attack_config": {"n_prompts": 2},
    }
    local = read_rows(gu.run_benchmark(spec, tmp_path / "local", progress=False))
    remote = read_rows(gu.run_benchmark(spec, tmp_path / "ray", ray=True, progress=False))
    assert all(r["status"] == "ok" for r in local + remote)
    assert _comparable(remote) == _comparable(local)
    assert {r["cell"] for r in remote} == {r["cell"] for r in local}
    # the Ray workers wrote their run directories where the driver asked
    assert all((tmp_path / "ray" / "runs" / c / "config.json").is_file() for c in
               {r["cell"] for r in remote})  # fmt: skip
