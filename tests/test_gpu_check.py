"""experiments/gpu_check.py runs on a CPU at reduced size (CI runs it; on a GPU it makes the
table of docs/results.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check.py"


def test_gpu_check_runs_at_reduced_size(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--size", "reduced", "--device", "cpu", "--dtypes", "float32,bfloat16",
                     "--steps", "2", "--images", "2", "--sample-steps", "2"])  # fmt: skip
    cases = {(r["dtype"], r["case"]) for r in rows}
    assert cases == {(d, c) for d in ("float32", "bfloat16") for c in [*mod.CASES, "sampling"]}
    for r in rows:
        if r["case"] == "sampling":
            assert r["images_per_s"] > 0
        else:
            assert r["peak_gb"] > 0 and (r["seconds_per_step"] or 0) >= 0
            assert (r["seconds_per_step"] is None) == (mod.CASES[r["case"]][2] == 0)
    out = capsys.readouterr().out
    assert "| bfloat16 | esd-x |" in out and "6,163 / 17.8" in out
