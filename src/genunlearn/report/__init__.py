"""Reports from benchmark results: tables (CSV, Markdown), plots and one self-contained HTML page.

``write_report(results, "report.html")`` reads ``results.jsonl`` (rows described in
:mod:`genunlearn.bench.results`) and writes ``report.html``, ``report.csv`` and ``report.md``.
"""

from __future__ import annotations

from genunlearn.report.html import write_report
from genunlearn.report.plots import frontier_plot, sequential_curves, tradeoff_scatter
from genunlearn.report.tables import (
    robustness_matrix,
    sequential_table,
    summary_table,
    to_markdown,
    write_csv,
)

__all__ = [
    "frontier_plot",
    "robustness_matrix",
    "sequential_curves",
    "sequential_table",
    "summary_table",
    "to_markdown",
    "tradeoff_scatter",
    "write_csv",
    "write_report",
]
