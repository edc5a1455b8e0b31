"""One self-contained HTML report (inline CSS, images as data URIs, no JavaScript).

Sections, each with a stable id: ``summary`` and ``summary-by-kind`` (method tables),
``robustness`` (methods x attacks: mean ASR with pre-ASR) and ``attack-examples``, ``tradeoff``
(scatter), ``frontier`` (only when a method was run as several labelled variants, e.g. a knob
sweep), ``sequential`` and ``sequential-table`` (only when the rows have sequential-unlearning
metrics), ``version-warning`` (only when the rows come from another genunlearn version or mix
versions), ``samples`` (each run's
``samples.png`` next to the ``original`` run of the same concept, plus ``attack_<name>.png``) and
``failures``. Every string taken from the rows is HTML-escaped. ``<stem>.csv`` and ``<stem>.md``
are written next to the page.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genunlearn.bench.results import RESULTS, read_rows, version_note
from genunlearn.report import plots, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 8 * 2**20
MAX_RUNS_SHOWN = 200

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
td.err{text-align:left;font-family:monospace;white-space:pre-wrap;color:#a00}
.pre{color:#777;font-size:.85em} figure{display:inline-block;margin:.3em;vertical-align:top}
figcaption{font-size:.8em;color:#555} img{max-width:100%;image-rendering:pixelated}
.run{border-top:1px solid #ddd;padding:.5em 0}
.run figure{width:48%} .run img{width:100%} code{background:#f6f6f6;padding:0 .2em}
.warn{background:#fff4d6;border:1px solid #e0b84c;padding:.4em .7em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(headers: Sequence[str], body: Sequence[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>\n" for r in body)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>'


def _pct(v: float | None) -> str:
    return tables.fmt(v, "pct")


def _robustness_cell(v: dict[str, Any]) -> str:
    if v["asr"] is None:
        return tables.MISSING
    std = f" ± {_pct(v['asr_std'])}" if v["asr_std"] is not None else ""
    return f"{_pct(v['asr'])}{std} (pre {_pct(v['pre_asr'])})"


def robustness_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The robustness matrix as display rows: method, then ``ASR (pre-ASR)`` in % per attack."""
    methods, attacks, values = tables.robustness_matrix(rows)
    return [
        {"method": m, **{a: _robustness_cell(v) for a, v in zip(attacks, line, strict=True)}}
        for m, line in zip(methods, values, strict=True)
    ]


def markdown_report(rows: Sequence[dict[str, Any]]) -> str:
    """The report's tables as Markdown: summary, per concept kind and robustness."""
    if not rows:
        return "# genunlearn report\n\nno results yet\n"
    table = tables.summary_table(rows)
    overall, per_kind = tables.column_groups(table)
    parts = ["# genunlearn report", "## Methods", tables.to_markdown(table, overall)]
    if per_kind:
        parts += ["## By concept kind", tables.to_markdown(table, per_kind)]
    rob = robustness_table(rows)
    if rob:
        parts += ["## Robustness (ASR % with pre-attack ASR)", tables.to_markdown(rob)]
    front = [
        {"method": name, "variant": p["knob"], "UA (%)": _pct(p["ua"]), "IRA (%)": _pct(p["ira"]),
         "CRA (%)": _pct(p["cra"])}
        for name, pts in plots.frontier_series(rows).items()
        for p in pts
    ]  # fmt: skip
    if front:
        parts += ["## Erasure/retention frontier", tables.to_markdown(front)]
    seq = tables.sequential_table(rows)
    if seq:
        parts += ["## Sequential unlearning", tables.to_markdown(seq)]
    return "\n\n".join(parts)


def _summary_html(table: list[dict[str, Any]]) -> str:
    overall, per_kind = tables.column_groups(table)
    out = ['<section id="methods"><h2>Methods</h2>']
    out.append(
        "<p>Mean ± sample std over all finished cells (concepts and seeds) of a method; "
        "UA, IRA, CRA in %.</p>"
    )
    headers, body = tables.display_columns(table, overall)
    out.append(_table(headers, body, "summary"))
    notes = tables.table_notes(body).strip()
    if notes:
        out += [f'<p class="note">{_e(n)}</p>' for n in notes.split("\n\n")]
    if per_kind:
        out.append("<h3>By concept kind</h3>")
        out.append(_table(*tables.display_columns(table, per_kind), "summary-by-kind"))
    return "\n".join(out + ["</section>"])


def _robustness_html(rows: Sequence[dict[str, Any]]) -> str:
    methods, attacks, values = tables.robustness_matrix(rows)
    out = ['<section id="attacks"><h2>Robustness</h2>']
    if not attacks:
        return out[0] + '<p id="robustness">no attack results</p></section>'
    out.append(
        "<p>Mean attack success rate (%) over cells; in brackets the share of the "
        "attack's prompts that already showed the concept before the attack.</p>"
    )
    body = [
        [m] + [_robustness_cell(v) for v in line] for m, line in zip(methods, values, strict=True)
    ]
    out.append(_table(["method"] + attacks, body, "robustness"))
    items = [
        f"<li><b>{_e(m)}</b> / {_e(a)}: "
        + ", ".join(f"<code>{_e(p)}</code>" for p in v["examples"])
        for m, line in zip(methods, values, strict=True)
        for a, v in zip(attacks, line, strict=True)
        if v["examples"]
    ]
    if items:
        out.append('<h3>Example adversarial prompts</h3><ul id="attack-examples">')
        out += items + ["</ul>"]
    return "\n".join(out + ["</section>"])


def _figure(png: bytes | None, section_id: str, title: str, alt: str) -> str:
    if png is None:
        return ""
    return (
        f'<section id="{section_id}"><h2>{_e(title)}</h2>'
        f'<img alt="{_e(alt)}" src="{data_uri(png)}"></section>'
    )


def _sequential_html(rows: Sequence[dict[str, Any]]) -> str:
    png = plots.sequential_curves(rows)
    table = tables.sequential_table(rows)
    if png is None and not table:
        return ""
    out = ['<section id="sequential"><h2>Sequential unlearning</h2>']
    out.append(
        "<p>Concepts erased one after another with one method; after each step, UA of every "
        "concept erased so far (a drop = rebound) and the accuracy on prompts with none of them "
        "(mean over seeds, %).</p>"
    )
    if png is not None:
        out.append(f'<img alt="sequential curves" src="{data_uri(png)}">')
    if table:
        out.append(_table(list(table[0]), [list(r.values()) for r in table], "sequential-table"))
    return "\n".join(out + ["</section>"])


def _frontier_html(rows: Sequence[dict[str, Any]]) -> str:
    png = plots.frontier_plot(rows)
    if png is None:
        return ""
    body = [
        [name, p["knob"], _pct(p["ua"]), _pct(p["ira"]), _pct(p["cra"]), p["n_cells"]]
        for name, pts in plots.frontier_series(rows).items()
        for p in pts
    ]
    return (
        '<section id="frontier"><h2>Erasure/retention frontier</h2>'
        "<p>Each method run as several variants (e.g. a knob sweep): UA against IRA and CRA per "
        "variant, in knob order (means over concepts and seeds, %).</p>"
        f'<img alt="frontier" src="{data_uri(png)}">'
        + _table(["method", "variant", "UA (%)", "IRA (%)", "CRA (%)", "cells"], body,
                 "frontier-table")
        + "</section>"
    )  # fmt: skip


def _run_dir(run_dir: Any, res_dir: Path) -> Path | None:
    if not run_dir:
        return None
    p = Path(str(run_dir))
    for cand in (p, res_dir / p, res_dir / "runs" / p.name):
        if cand.is_dir():
            return cand
    return None


def _image(path: Path, caption: str) -> str:
    try:
        if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
            return ""
        png = path.read_bytes()
    except OSError:
        return ""
    if not png.startswith(PNG_MAGIC):
        return ""
    return (
        f'<figure><img alt="{_e(caption)}" src="{data_uri(png)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _order(seed: Any) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _runs(rows: Sequence[dict[str, Any]], res_dir: Path) -> dict[tuple, tuple[dict, Path]]:
    """One run per (model, label, target): the lowest seed whose directory has samples.png."""
    best: dict[tuple, tuple[dict, Path]] = {}
    seen: set = set()
    for r in rows:
        if r.get("status", "ok") != "ok" or r.get("cell") in seen:
            continue
        seen.add(r.get("cell"))
        k = (*tables.method_key(r), str(r.get("target")))
        if k in best and _order(best[k][0].get("seed")) <= _order(r.get("seed")):
            continue
        d = _run_dir(r.get("run_dir"), res_dir)
        if d is not None and (d / "samples.png").is_file():
            best[k] = (r, d)
    return best


def _samples_html(rows: Sequence[dict[str, Any]], res_dir: Path) -> str:
    runs = _runs(rows, res_dir)
    originals = {(k[0], k[2]): v for k, v in runs.items() if v[0].get("method") == "original"}
    erased = {k: v for k, v in runs.items() if v[0].get("method") != "original"}
    shown = [
        v
        for k, v in runs.items()
        if k in erased or not any(e[0] == k[0] and e[2] == k[2] for e in erased)
    ]
    out = ['<section id="samples"><h2>Samples</h2>']
    if not shown:
        return out[0] + "<p>no sample images found</p></section>"
    out.append(
        "<p>Rows of each grid: target-concept prompts, then retain prompts. "
        "Before = the <code>original</code> run of the same concept.</p>"
    )
    shown.sort(key=lambda v: (str(v[0].get("target")), v[0].get("method") != "original"))
    for r, d in shown[:MAX_RUNS_SHOWN]:
        head = f"{r.get('label')} on {r.get('target')} (seed {r.get('seed')}, {r.get('model')})"
        figs = []
        orig = originals.get((str(r.get("model")), str(r.get("target"))))
        if orig is not None and r.get("method") != "original":
            figs.append(_image(orig[1] / "samples.png", "before: original"))
        figs.append(_image(d / "samples.png", f"after: {r.get('label')}"))
        figs += [
            _image(p, f"attack: {p.stem[len('attack_') :]}") for p in sorted(d.glob("attack_*.png"))
        ]
        out.append(f'<div class="run"><h3>{_e(head)}</h3>{"".join(figs)}</div>')
    if len(shown) > MAX_RUNS_SHOWN:
        out.append(f"<p>… and {len(shown) - MAX_RUNS_SHOWN} more runs not shown.</p>")
    return "\n".join(out + ["</section>"])


def _failures_html(rows: Sequence[dict[str, Any]]) -> str:
    ok_cells = {r.get("cell") for r in rows if r.get("status", "ok") == "ok"}
    failed: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if r.get("status") == "failed":
            failed[r.get("cell")] = r
    open_ = [r for c, r in failed.items() if c not in ok_cells]
    retried = len(failed) - len(open_)
    out = ['<section id="failed-cells"><h2>Failed cells</h2>']
    if retried:
        out.append(f"<p>{retried} earlier failure(s) succeeded on a later run.</p>")
    if not open_:
        return "\n".join(out + ['<p id="failures">no failed cells</p></section>'])
    out.append(
        '<table id="failures"><thead><tr><th>cell</th><th>method</th><th>target</th>'
        '<th>seed</th><th>time</th><th style="text-align:left">error</th></tr></thead><tbody>'
    )
    for r in open_:
        tb = r.get("traceback")
        detail = f"<details><summary>traceback</summary>{_e(tb)}</details>" if tb else ""
        cells = [r.get("cell"), r.get("label", r.get("method")), r.get("target"), r.get("seed")]
        out.append(
            "<tr>"
            + "".join(f"<td>{_e(c)}</td>" for c in cells + [r.get("time", "")])
            + f'<td class="err">{_e(r.get("error") or "")}{detail}</td></tr>'
        )
    return "\n".join(out + ["</tbody></table></section>"])


def render_html(rows: Sequence[dict[str, Any]], source: str, res_dir: Path) -> str:
    """The report page for ``rows`` (``source`` names the results in the header)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    cells = len({r.get("cell") for r in rows})
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>genunlearn report</title><style>{CSS}</style></head><body>\n"
        f'<h1>genunlearn report</h1><p class="meta" id="meta">generated {_e(now)} from '
        f"<code>{_e(source)}</code>: {len(rows)} rows, {cells} cells</p>\n"
    )
    if not rows:
        return head + '<p id="empty">no results yet</p>\n</body></html>\n'
    note = version_note(list(rows))
    if note:
        head += f'<p class="warn" id="version-warning">{_e(note)}</p>\n'
    table = tables.summary_table(rows)
    body = [
        _summary_html(table),
        _robustness_html(rows),
        _figure(plots.tradeoff_scatter(table), "tradeoff", "Erasure vs retention", "scatter"),
        _frontier_html(rows),
        _sequential_html(rows),
        _samples_html(rows, res_dir),
        _failures_html(rows),
    ]
    return head + "\n".join(b for b in body if b) + "\n</body></html>\n"


def write_report(results_path_or_dir: str | Path, html_path: str | Path) -> Path:
    """Write the HTML report and ``<stem>.csv`` / ``<stem>.md`` tables next to it.

    Args:
        results_path_or_dir: ``results.jsonl`` or the directory holding it (it must exist; an
            empty file gives a page saying "no results yet").
        html_path: the page to write; parent directories are created.

    Returns:
        The HTML path.

    Raises:
        GenUnlearnError: when there is no results file or a line is not JSON.

    Warns:
        UserWarning: when the rows come from another genunlearn version or mix versions (the
            page says so too).
    """
    import warnings

    src = Path(results_path_or_dir)
    rows = read_rows(src)
    note = version_note(rows)
    if note:
        warnings.warn(note, stacklevel=2)
    res_dir = src if src.is_dir() else src.parent
    out = Path(html_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tables.write_csv(tables.summary_table(rows), out.with_name(out.stem + ".csv"))
    out.with_name(out.stem + ".md").write_text(markdown_report(rows), encoding="utf-8")
    source = str(src / RESULTS if src.is_dir() else src)
    out.write_text(render_html(rows, source, res_dir), encoding="utf-8")
    return out
