"""Toy-sd figures next to the published UnlearnCanvas figures of the same methods (Markdown).

UnlearnCanvas (Zhang et al., NeurIPS 2024 D&B, https://arxiv.org/abs/2402.11846) measures UA /
IRA / CRA on SD-1.5 fine-tuned on its own 50 styles x 20 objects, with a ViT-L classifier, averaged
over every unlearned style (or object). toy-sd measures the same three quantities on ToyCanvas
(8 styles x 10 objects x 5 colours, 32 px) with the world's exact evaluator. The worlds differ
(scale, classifier, hyper-parameters), so a row compares *patterns* (which method trades which
kind of accuracy), not values.

Published rows: ESD, FMN, UCE, CA and SalUn from the authors' result file
(``OPTML-Group/UnlearnCanvas-Benchmark``, ``assets/uc_result.csv``); SPM and EraseDiff from the
paper's main table (as summarised in our reference notes, not re-checked against arXiv v4).

Usage::

    python experiments/published_uc.py RESULTS.jsonl [RESULTS.jsonl ...]

Each toy figure is the mean over the cells (concept x seed) of that method and concept kind in the
given results files; ``n`` is the number of cells. Rows with ``label`` != method (frontier
variants) are ignored.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

# (style UA, IRA, CRA, object UA, IRA, CRA), percent
PUBLISHED = {
    "esd": (98.58, 80.97, 93.96, 92.15, 55.78, 44.23),
    "forget_me_not": (88.48, 56.77, 46.60, 45.64, 90.63, 73.46),
    "uce": (98.40, 60.22, 47.71, 94.31, 39.35, 34.67),
    "concept_ablation": (60.82, 96.01, 92.70, 46.67, 90.11, 81.97),
    "salun": (86.26, 90.39, 95.08, 86.91, 96.35, 99.59),
    "spm": (60.94, 92.39, 84.33, 71.25, 90.79, 81.65),
    "erasediff": (92.42, 73.91, 98.93, 86.67, 94.03, 48.48),
}


def toy_means(paths: list[str]) -> dict[tuple[str, str], tuple[list[float], int]]:
    """(method, kind) -> ([UA, IRA, CRA] means in percent, number of cells)."""
    from genunlearn.bench.results import read_rows

    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for p in paths:
        for r in read_rows(p):
            if r.get("status") != "ok" or r.get("attack") is not None:
                continue
            if r.get("label") not in (None, r["method"]) or r.get("kind") not in (
                "style",
                "object",
            ):
                continue
            if r["metric"] in ("ua", "ira", "cra"):
                key = (r["method"], r["kind"])
                cells[key].setdefault(r["cell"], {})[r["metric"]] = 100 * float(r["value"])
    out = {}
    for key, by_cell in cells.items():
        full = [v for v in by_cell.values() if len(v) == 3]
        if full:
            out[key] = (
                [statistics.fmean(v[m] for v in full) for m in ("ua", "ira", "cra")],
                len(full),
            )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.jsonl files (or their directories)")
    args = ap.parse_args(argv)
    toy = toy_means(args.results)
    print(
        "| method | toy-sd style UA / IRA / CRA | UnlearnCanvas style | "
        "toy-sd object UA / IRA / CRA | UnlearnCanvas object |"
    )
    print("|---|---|---|---|---|")
    for method, pub in PUBLISHED.items():
        cols = []
        for i, kind in enumerate(("style", "object")):
            got = toy.get((method, kind))
            cols.append(
                f"{' / '.join(f'{x:.1f}' for x in got[0])} (n={got[1]})" if got else "not run"
            )
            cols.append(" / ".join(f"{x:.1f}" for x in pub[3 * i : 3 * i + 3]))
        print(f"| `{method}` | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
