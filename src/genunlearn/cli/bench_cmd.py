"""Run a benchmark grid from a YAML spec (resumable; --ray runs cells as Ray tasks).

One benchmark at a time per output directory: a second one refuses at once (exit 2), or with
--wait starts when the first is done. Exit 2 as well when the spec is wrong (checked before any
cell runs) or when no cell of the grid finished.
"""

from __future__ import annotations

HELP = "run a benchmark grid (YAML) into results.jsonl, optionally with the HTML report"


def add_arguments(p) -> None:
    p.add_argument("spec", help="benchmark YAML (see configs/bench/)")
    p.add_argument("--out", default="results", help="results directory (re-use it to resume)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run cells as Ray tasks (local cluster, or an existing one by address)")  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="do not write OUT/report.html")
    p.add_argument("--wait", action="store_true",
                   help="if another benchmark is writing to OUT, wait for it instead of refusing")  # fmt: skip


def run(args) -> int:
    from genunlearn import api

    path = api.run_benchmark(args.spec, args.out, ray=args.ray, progress=not args.quiet,
                             report=not args.no_report, wait=args.wait)  # fmt: skip
    print(f"results: {path}")
    if not args.no_report:
        print(f"report: {path.parent / 'report.html'}")
    return 0
