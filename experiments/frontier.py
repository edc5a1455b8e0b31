"""Erasure/retention frontier of one method: sweep one knob, print UA / IRA / CRA per value.

Each value of the knob becomes a labelled method variant (``<method>[<knob>=<value>]``) of one
benchmark grid, so the sweep is an ordinary, resumable ``genunlearn bench`` results file: run it
again and finished cells are skipped; ``genunlearn report DIR/results.jsonl`` draws the frontier
(UA against IRA and CRA per variant). Every variant starts from the method's preset (``toy`` on
toy-sd) with only the swept knob changed, plus any fixed ``--set key=value`` overrides.

Usage::

    python experiments/frontier.py --method esd --knob steps --values 50,100,200 \\
        --concepts striped,star --seeds 0 --out results/frontier_esd
    python experiments/frontier.py --method salun --knob mask_fraction --values 0.1,0.3,0.5 \\
        --concepts "style:3,object:3" --seeds 0,1 --set steps=80

``--concepts`` takes concept names, or ``kind:n`` for the first ``n`` concepts of a kind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METRICS = ("ua", "ira", "cra", "fid", "seconds", "peak_memory_bytes", "storage_bytes")


def _concepts(text: str) -> list:
    """``"striped,star"`` -> names; ``"style:3"`` -> the spec's ``{kind, n}`` selector."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, n = part.partition(":")
        out.append({"kind": kind, "n": int(n)} if n.isdigit() else part)
    return out


def _value(text: str):
    """A knob value from the command line: int, float, bool, none or text."""
    from genunlearn.config import parse_overrides

    return parse_overrides([f"v={text}"])["v"]


def build_spec(args) -> dict:
    """The benchmark grid of the sweep (one labelled variant per knob value)."""
    from genunlearn.config import parse_overrides

    fixed = parse_overrides(args.set or [])
    methods = []
    for raw in args.values.split(","):
        v = _value(raw.strip())
        methods.append(
            {
                "name": args.method,
                "preset": args.preset,
                "overrides": {**fixed, args.knob: v},
                "label": f"{args.method}[{args.knob}={raw.strip()}]",
            }
        )
    return {
        "name": f"frontier-{args.method}-{args.knob}",
        "models": [args.model],
        "methods": methods,
        "concepts": _concepts(args.concepts),
        "seeds": [int(s) for s in args.seeds.split(",")],
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": args.n_per_prompt, "fid": args.fid},
    }


def summarise(rows: list[dict]) -> list[tuple[str, dict[str, tuple[float, float, int]]]]:
    """Per variant label (in first-seen order): metric -> (mean, std, n) over concepts x seeds."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("status") == "ok" and r.get("attack") is None and r["metric"] in METRICS:
            values[r["label"]][r["metric"]].append(float(r["value"]))
    out = []
    for label, ms in values.items():
        stats = {
            m: (statistics.fmean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v))
            for m, v in ms.items()
        }
        out.append((label, stats))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--knob", required=True, help="config field to sweep")
    ap.add_argument("--values", required=True, help="comma-separated knob values")
    ap.add_argument(
        "--concepts", default="style:1,object:1", help="names or kind:n, comma-separated"
    )
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--model", default="toy-sd")
    ap.add_argument("--preset", default=None, help="method preset (default: toy on toy-sd)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed override")
    ap.add_argument("--n-per-prompt", type=int, default=2, help="evaluation images per prompt")
    ap.add_argument("--fid", action="store_true", help="also compute the feature FID")
    ap.add_argument("--out", required=True, help="results directory (resumable)")
    args = ap.parse_args(argv)

    from genunlearn import GenUnlearnError, registry, run_benchmark
    from genunlearn.bench.results import read_rows

    try:
        entry = registry.get("method", args.method)
        fields = set(getattr(entry.config, "__dataclass_fields__", {}))
        if args.knob not in fields:
            raise GenUnlearnError(
                f"{args.method} has no setting {args.knob!r}; valid: {', '.join(sorted(fields))}"
            )
        results = run_benchmark(build_spec(args), Path(args.out))
    except GenUnlearnError as e:
        sys.exit(f"error: {e}")
    failed = [r for r in read_rows(results) if r.get("status") == "failed"]
    for r in failed:
        print(f"FAILED {r['cell']}: {r.get('error')}")
    print(f"{'variant':40s} " + " ".join(f"{m:>14s}" for m in ("ua", "ira", "cra", "seconds")))
    for label, stats in summarise(read_rows(results)):
        cols = []
        for m in ("ua", "ira", "cra", "seconds"):
            mean, std, n = stats.get(m, (float("nan"), 0.0, 0))
            scale = 100 if m != "seconds" else 1
            cols.append(f"{mean * scale:7.1f}±{std * scale:<5.1f}")
        print(f"{label:40s} " + " ".join(f"{c:>14s}" for c in cols) + f"  (n={stats['ua'][2]})")


if __name__ == "__main__":
    main()
