"""Turn results.jsonl into tables (CSV, Markdown) and one self-contained HTML page."""

from __future__ import annotations

HELP = "write the HTML report and CSV/Markdown tables from results"


def add_arguments(p) -> None:
    p.add_argument("results", help="results.jsonl or the directory holding it")
    p.add_argument("--html", default=None, help="HTML output (default: next to the results)")


def run(args) -> int:
    from pathlib import Path

    from genunlearn.report.html import write_report

    res = Path(args.results)
    html = Path(args.html) if args.html else (res if res.is_dir() else res.parent) / "report.html"
    out = write_report(res, html)
    print(f"report: {out}")
    return 0
