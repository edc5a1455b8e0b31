"""Run a benchmark grid from a YAML spec (resumable; --ray runs cells as Ray tasks).

When the grid ends, OUT/report.html (with report.csv and report.md) is written from
OUT/results.jsonl, as `genunlearn report OUT` would; --no-report skips it. One benchmark at a
time per output directory: a second one refuses at once (exit 2), or with --wait starts when the
first is done. Exit 2 as well when the spec is wrong (checked before any cell runs, nothing
written) or when no cell of the grid finished (the rows and the report are written first).
"""

from __future__ import annotations

HELP = "run a benchmark grid (YAML) into results.jsonl, then write the HTML report"


def add_arguments(p) -> None:
    p.add_argument("spec", help="benchmark YAML (see configs/bench/)")
    p.add_argument("--out", default="results", help="results directory (re-use it to resume)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run cells as Ray tasks (local cluster, or an existing one by address)")  # fmt: skip
    p.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html (write it later with 'genunlearn report OUT')")  # fmt: skip
    p.add_argument("--wait", action="store_true",
                   help="if another benchmark is writing to OUT, wait for it instead of refusing")  # fmt: skip


def run(args) -> int:
    from genunlearn.bench.runner import NoCellFinished, run_benchmark

    try:
        path = run_benchmark(
            args.spec, args.out, ray=args.ray, progress=not args.quiet, wait=args.wait
        )
    except NoCellFinished as e:  # the report shows the failures, so it is written all the same
        _report(e.results, args.no_report)
        raise
    print(f"results: {path}")
    _report(path, args.no_report)
    return 0


def _report(results, skip: bool) -> None:
    if skip:
        return
    from genunlearn.report.html import write_report

    print(f"report: {write_report(results, results.parent / 'report.html')}")
