"""``lktrace report``: one self-contained HTML page to attach to a bug report.

The page holds the trace header, the whole lock-ordering graph folded, and
every finding in ``analyze``'s order, each with a figure of its locks
(:mod:`~lktrace.replay.figures`), a timeline of the tasks involved and its
stacks folded in ``<details>``.  Everything is inline (CSS, JS, SVG) and a
Content-Security-Policy forbids fetching anything, so it opens offline and
from a mail attachment.

The parts are functions of a :class:`Page` (one analysed run), so
:func:`render_diff_html` lays two of them side by side.  Big traces give a
small page: only findings are drawn, timelines show the tasks involved in
the spans around the finding, and long lists are cut with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from html import escape
from importlib.resources import files
from pathlib import Path

from lktrace.console import fmt_count, fmt_ns
from lktrace.replay.analyze import Options, analysis
from lktrace.replay.cards import (
    MAX_CARDS,
    MAX_ROWS,
    findings_html,
    is_error,
    status_badge,
    titled,
)
from lktrace.replay.changes import Diff
from lktrace.replay.figures import COLUMN_WIDTH, REPORT_WIDTH, Drawings
from lktrace.replay.findings import Analysis
from lktrace.replay.identity import Finding, finding_identity
from lktrace.replay.state import ReplayState, replay
from lktrace.replay.timeline import Timelines
from lktrace.trace import Trace, TraceError
from lktrace.version import writer

# First script on the page: records uncaught errors where a test (or a person) can see them.
_ERROR_HOOK = (
    "window.lktraceErrors=[];"
    "window.addEventListener('error',function(e){window.lktraceErrors.push(String(e.message));"
    "document.documentElement.setAttribute('data-errors',window.lktraceErrors.join(' | '));});"
)
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@dataclass
class Page:
    """One analysed run: what a report (or one column of a diff) is drawn from."""

    state: ReplayState
    analysis: Analysis
    label: str = ""

    @cached_property
    def timelines(self) -> Timelines:
        return Timelines(self.state)

    @cached_property
    def drawings(self) -> Drawings:
        return Drawings(self.state, self.analysis)


def build_page(
    traces: Iterable[Trace],
    opts: Options | None = None,
    label: str = "",
    drop_tables: bool = False,
) -> Page:
    """Replay and analyse ``traces``, keeping the replay state for drawing.

    The page needs only the replay: ``drop_tables`` empties each trace's table
    once loaded, as ``analyze`` does.
    """
    opts = opts or Options()
    state = replay(traces, opts, drop_tables)
    label = label or ", ".join(t.path.name for t in state.events.traces)
    return Page(state, analysis(state, opts), label)


# -- the page -----------------------------------------------------------------


def render_html(page: Page) -> str:
    """The report page of one run."""
    a = page.analysis
    body = [
        f"<header><h1>lktrace report</h1>{_header(page)}</header>",
        "<main>",
        _contents(a, "r"),
        page.drawings.graphs("r"),
        _findings(page, "r"),
        "</main>",
    ]
    return _document(f"lktrace report: {page.label}", "\n".join(body))


def render_diff_html(before: Page, after: Page, lines: Sequence[str] = ()) -> str:
    """Two runs side by side (e.g. stock and patched kernel), findings marked gone/new/kept.

    ``lines`` go under the title: e.g. the verdict and counts of ``lktrace diff``.
    """
    keys = [{finding_identity(f) for f in _all(p.analysis)} for p in (before, after)]
    status = [
        lambda f: "kept" if finding_identity(f) in keys[1] else "gone",
        lambda f: "kept" if finding_identity(f) in keys[0] else "new",
    ]
    columns = []
    for page, prefix, st in zip((before, after), ("a", "b"), status, strict=True):
        columns.append(
            f'<section class="column"><h2>{escape(page.label)}</h2>{_header(page)}'
            f"{_contents(page.analysis, prefix, st)}{page.drawings.graphs(prefix)}"
            f"{_findings(page, prefix, st, COLUMN_WIDTH)}</section>"
        )
    gone = len(keys[0] - keys[1])
    new = len(keys[1] - keys[0])
    kept = len(keys[0] & keys[1])
    summary = (
        f'<p class="diffsum"><span class="badge gone">{gone} gone</span> '
        f'<span class="badge new">{new} new</span> '
        f'<span class="badge kept">{kept} in both</span></p>'
    )
    body = (
        f"<header><h1>lktrace diff</h1><p>{escape(before.label)} &rarr; "
        f"{escape(after.label)}</p>{''.join(f'<p>{escape(x)}</p>' for x in lines)}"
        f"{summary}</header>"
        f'<main class="diff">{"".join(columns)}</main>'
    )
    return _document(f"lktrace diff: {before.label} vs {after.label}", body)


def diff_lines(d: Diff, most: int = 10) -> list[str]:
    """The head of a diff page: ``lktrace diff``'s verdict, counts and inversion changes."""
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in d.summary.items() if n)
    lines = [f"verdict: {d.verdict}" + (f" ({counts})" if counts else "")]
    for word, changes in (
        ("fixed", d.inversions_fixed),
        ("introduced", d.inversions_introduced),
        ("remaining", d.inversions_remaining),
    ):
        for c in changes[:most]:
            arrow = " \u2192 ".join([*c.cycle, c.cycle[0]])
            lines.append(f"{word}: {arrow} ({c.level})")
        if len(changes) > most:
            lines.append(f"{word}: and {len(changes) - most} more")
    return lines


def write_html(path: str | Path, html: str) -> Path:
    """Write a page; :class:`TraceError` names the file when it cannot be written."""
    path = Path(path)
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as e:
        raise TraceError(path, f"cannot write: {e.strerror or e}") from e
    return path


def _all(a: Analysis) -> list[Finding]:
    return [*a.deadlocks, *a.inversions, *a.guarded, *a.anomalies]


def _asset(name: str) -> str:
    return files("lktrace.replay").joinpath(name).read_text(encoding="utf-8")


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{escape(writer())}">'
        f"<title>{escape(title)}</title><script>{_ERROR_HOOK}</script>"
        f"<style>{_asset('report.css')}</style></head>\n<body>\n{body}\n"
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def _header(page: Page) -> str:
    a = page.analysis
    rows = [f"<tr><th>report</th><td>written by {escape(writer())}</td></tr>"]
    for t in a.traces:
        kernel = " ".join(p for p in (t["kernel"], t["kernel_version"]) if p) or "unknown"
        rows.append(
            f"<tr><th>trace</th><td><code>{escape(t['file'])}</code>"
            f"{', written by ' + escape(t['writer']) if t.get('writer') else ''}</td></tr>"
            f"<tr><th>kernel</th><td>{escape(kernel)} on {escape(t['host'] or 'unknown')}"
            f"{', started ' + escape(t['started_at']) if t['started_at'] else ''}</td></tr>"
            f"<tr><th>events</th><td>{fmt_count(t['events'])} over {fmt_ns(t['span_ns'])}, "
            f"{fmt_count(t['lost_events'])} lost</td></tr>"
        )
        if t["command"]:
            rows.append(f"<tr><th>command</th><td><code>{escape(t['command'])}</code></td></tr>")
        if t["probes"]:
            probes = ", ".join(t["probes"][:12]) + (", \u2026" if len(t["probes"]) > 12 else "")
            rows.append(f"<tr><th>probes</th><td>{escape(probes)}</td></tr>")
    s = a.summary
    rows.append(
        f"<tr><th>seen</th><td>{fmt_count(s['tasks'])} tasks, {fmt_count(s['locks'])} locks in "
        f"{fmt_count(s['classes'])} classes, {fmt_count(s['edges'])} ordering edges</td></tr>"
    )
    notes = "".join(f'<p class="note">note: {escape(n)}</p>' for n in a.notes)
    return f'<table class="meta">{"".join(rows)}</table>{notes}'


def _contents(a: Analysis, prefix: str, status: Callable | None = None) -> str:
    """The findings as a list of links, in analyze's order."""
    items = []
    for i, (f, title) in enumerate(titled(a)):
        badge = status_badge(f, status)
        cls = "err" if is_error(f) else "warn"
        items.append(f'<li class="{cls}"><a href="#{prefix}-f{i}">{escape(title)}</a>{badge}</li>')
    if not items:
        return '<p class="clean">No lock-order inversions or anomalies found.</p>'
    shown = items[:MAX_ROWS]
    more = f"<li>and {len(items) - MAX_ROWS} more</li>" if len(items) > MAX_ROWS else ""
    return f'<section class="contents"><h2>Findings</h2><ol>{"".join(shown)}{more}</ol></section>'


def _findings(
    page: Page, prefix: str, status: Callable | None = None, width: float = REPORT_WIDTH
) -> str:
    """The finding cards, each with its own figure at most ``width`` px wide if it can."""
    drawn = [f for f, _ in titled(page.analysis)[:MAX_CARDS]]
    figures = page.drawings.findings(drawn, [f"{prefix}-f{i}" for i in range(len(drawn))], width)
    return findings_html(page.timelines, page.analysis, prefix, status, figures)
