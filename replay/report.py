"""``lktrace report``: one self-contained HTML page to attach to a bug report.

The page holds the trace header, the lock-ordering graph with the inverted
edges in red, and every finding in ``analyze``'s order, each with a timeline
of the tasks involved and its stacks folded in ``<details>``.  Everything is
inline (CSS, JS, SVG) and a Content-Security-Policy forbids fetching
anything, so it opens offline and from a mail attachment.

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
from lktrace.replay.analyze import Options, Run, select
from lktrace.replay.changes import Diff
from lktrace.replay.dot import LockGraph, function, graphviz_svg, lock_graph, to_dot
from lktrace.replay.findings import ERROR_KINDS, Analysis, Anomaly, Deadlock, Inversion, Witness
from lktrace.replay.layout import layered_svg
from lktrace.replay.render import lock_label, scenario_rows, stamp
from lktrace.replay.timeline import Mark, Timelines
from lktrace.trace import Trace, TraceError
from lktrace.version import writer

MAX_GRAPH_EDGES = 60
MAX_CARDS = 40  # findings drawn with a timeline; the rest are listed
MAX_ROWS = 500  # findings listed at most
PALETTE = ("#1e88e5", "#f4511e", "#8e24aa", "#43a047", "#fb8c00", "#00897b", "#6d4c41")

# First script on the page: records uncaught errors where a test (or a person) can see them.
_ERROR_HOOK = (
    "window.lktraceErrors=[];"
    "window.addEventListener('error',function(e){window.lktraceErrors.push(String(e.message));"
    "document.documentElement.setAttribute('data-errors',window.lktraceErrors.join(' | '));});"
)
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

Finding = Deadlock | Inversion | Anomaly


@dataclass
class Page:
    """One analysed run: what a report (or one column of a diff) is drawn from."""

    run: Run
    analysis: Analysis
    label: str = ""

    @cached_property
    def timelines(self) -> Timelines:
        return Timelines(self.run)


def build_page(
    traces: Iterable[Trace],
    opts: Options | None = None,
    label: str = "",
    drop_tables: bool = False,
) -> Page:
    """Run the analysis of ``traces`` and keep the replayed state for drawing.

    The page needs only the replay: ``drop_tables`` empties each trace's table
    once loaded, as ``analyze`` does.
    """
    opts = opts or Options()
    run = Run((select(t, opts) for t in traces), opts, drop_tables)
    return Page(run, run.analysis(), label or ", ".join(t.path.name for t in run.ev.traces))


# -- the page -----------------------------------------------------------------


def render_html(page: Page) -> str:
    """The report page of one run."""
    a = page.analysis
    body = [
        f"<header><h1>lktrace report</h1>{_header(page)}</header>",
        "<main>",
        _contents(a, "r"),
        _graphs(page, "r"),
        _findings(page, "r"),
        "</main>",
    ]
    return _document(f"lktrace report: {page.label}", "\n".join(body))


def render_diff_html(before: Page, after: Page, lines: Sequence[str] = ()) -> str:
    """Two runs side by side (e.g. stock and patched kernel), findings marked gone/new/kept.

    ``lines`` go under the title: e.g. the verdict and counts of ``lktrace diff``.
    """
    keys = [{finding_key(f) for f in _all(p.analysis)} for p in (before, after)]
    status = [
        lambda f: "kept" if finding_key(f) in keys[1] else "gone",
        lambda f: "kept" if finding_key(f) in keys[0] else "new",
    ]
    columns = []
    for page, prefix, st in zip((before, after), ("a", "b"), status, strict=True):
        columns.append(
            f'<section class="column"><h2>{escape(page.label)}</h2>{_header(page)}'
            f"{_contents(page.analysis, prefix, st)}{_graphs(page, prefix)}"
            f"{_findings(page, prefix, st)}</section>"
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


def finding_key(f: Finding) -> tuple:
    """What makes a finding "the same" in two runs (addresses and tids differ)."""
    if isinstance(f, Deadlock):
        return ("deadlock", frozenset(t.waits_for.lock_class for t in f.tasks))
    if isinstance(f, Inversion):
        return ("guarded" if f.gate else "inversion", f.level, frozenset(f.cycle))
    return ("anomaly", f.kind, f.lock_class, f.comm)


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
    for i, (f, title) in enumerate(_titled(a)):
        badge = _status_badge(f, status)
        cls = "err" if _is_error(f) else "warn"
        items.append(f'<li class="{cls}"><a href="#{prefix}-f{i}">{escape(title)}</a>{badge}</li>')
    if not items:
        return '<p class="clean">No lock-order inversions or anomalies found.</p>'
    shown = items[:MAX_ROWS]
    more = f"<li>and {len(items) - MAX_ROWS} more</li>" if len(items) > MAX_ROWS else ""
    return f'<section class="contents"><h2>Findings</h2><ol>{"".join(shown)}{more}</ol></section>'


def _titled(a: Analysis) -> list[tuple[Finding, str]]:
    out: list[tuple[Finding, str]] = []
    for i, d in enumerate(a.deadlocks, 1):
        locks = ", ".join(t.waits_for.lock_name for t in d.tasks)
        out.append((d, f"Deadlock {i} (happened): {len(d.tasks)} tasks waiting on {locks}"))
    for group, word in ((a.inversions, "Inversion"), (a.guarded, "Guarded cycle")):
        for i, inv in enumerate(group, 1):
            arrow = " \u2192 ".join([*inv.cycle, inv.cycle[0]])
            out.append((inv, f"{word} {i}: {arrow} ({inv.level})"))
    for an in a.anomalies:
        lock = lock_label(an.lock_class, an.lock_name)
        out.append((an, f"{an.kind}: {an.comm}/{an.tid} on {lock}"))
    return out


def _is_error(f: Finding) -> bool:
    if isinstance(f, Inversion):
        return f.gate is None
    return isinstance(f, Deadlock) or f.kind in ERROR_KINDS


def _status_badge(f: Finding, status: Callable | None) -> str:
    if status is None:
        return ""
    st = status(f)
    return f' <span class="badge {st}">{ {"kept": "in both"}.get(st, st) }</span>'


# -- the graph ----------------------------------------------------------------


def _graphs(page: Page, prefix: str) -> str:
    """The class graph (or instance graph), plus the instance graph of instance-level cycles."""
    run, a = page.run, page.analysis
    levels = list(run.graphs)
    if "instance" in levels and len(levels) == 2:
        wanted = any(i.level == "instance" for i in [*a.inversions, *a.guarded])
        levels = ["class", "instance"] if wanted else ["class"]
    parts = []
    for level in levels:
        g = lock_graph(run, a, level, MAX_GRAPH_EDGES)
        if not g.edges:
            parts.append(f'<p class="empty">No {level} ordering edges.</p>')
            continue
        svg = _graph_svg(g, f"{prefix}-{level}")
        cut = f" ({len(g.edges)} of {g.total_edges} edges)" if len(g.edges) < g.total_edges else ""
        parts.append(
            f'<figure class="graph"><div class="scroll">{svg}</div><figcaption>{level} graph'
            f"{cut}: red edges close an inversion, green dashed ones a guarded cycle; "
            "labels name the function that took the second lock.</figcaption></figure>"
        )
    return f'<section class="graphs"><h2>Lock order</h2>{"".join(parts)}</section>'


def _graph_svg(g: LockGraph, uid: str) -> str:
    svg = graphviz_svg(to_dot(g))
    if svg is None:
        return layered_svg(g, uid)
    # Graphviz numbers its ids from 1 in every drawing: keep them unique on the page.
    svg = svg.replace(' id="', f' id="{uid}-')
    return svg.replace("<svg ", '<svg class="lockgraph" ', 1)


# -- findings -----------------------------------------------------------------


def _findings(page: Page, prefix: str, status: Callable | None = None) -> str:
    cards = []
    rows = []
    for i, (f, title) in enumerate(_titled(page.analysis)):
        if i < MAX_CARDS:
            cards.append(_card(page, f, title, f"{prefix}-f{i}", _status_badge(f, status)))
        elif len(rows) < MAX_ROWS:
            rows.append(f'<tr id="{prefix}-f{i}"><td>{escape(title)}</td></tr>')
    if rows:
        cards.append(
            "<p>Further findings, without timelines:</p>"
            f"<table class='rest'>{''.join(rows)}</table>"
        )
    return "\n".join(cards)


@dataclass
class _Card:
    """What a finding contributes to its card: text, and what its timeline points at."""

    body: str
    marks: list[tuple[tuple[str, int], int, str]]  # ((file, tid), ts, label); tasks in order
    colour: dict[str, str]  # lock class or name -> colour
    closing: str = ""  # how to label the latest mark


def _card(page: Page, f: Finding, title: str, anchor: str, badge: str) -> str:
    if isinstance(f, Deadlock):
        card = _deadlock(f)
    elif isinstance(f, Inversion):
        card = _inversion(f)
    else:
        card = _anomaly(f)
    cls = "err" if _is_error(f) else "warn"
    return (
        f'<article class="finding {cls}" id="{anchor}"><h3>{escape(title)}{badge}</h3>'
        f"{card.body}{_timeline(page, card, anchor)}</article>"
    )


def _timeline(page: Page, card: _Card, uid: str) -> str:
    """A lane per task named by the marks, around them; the latest mark is the moment
    the cycle closed."""
    tl = page.timelines
    located = [(tl.task(f, tid), ts, label) for (f, tid), ts, label in card.marks]
    located = [m for m in located if m[0] is not None]
    if not located:
        return ""
    tasks = list(dict.fromkeys(t for t, _, _ in located))
    spans = [tl.around(t, ts) for t, ts, _ in located]
    last = max(range(len(located)), key=lambda i: located[i][1])
    marks = [
        Mark(ts, label, tl.file_of(t)) for i, (t, ts, label) in enumerate(located) if i != last
    ]
    t, ts, label = located[last]
    closing = f"{card.closing}: {label}" if card.closing else label
    marks.append(Mark(ts, closing, tl.file_of(t), strong=True))
    colour = card.colour
    svg = tl.svg(tasks, spans, marks, lambda c, n: colour.get(n) or colour.get(c), uid)
    legend = "".join(
        f'<span class="key"><i style="background:{c}"></i>{escape(k)}</span>'
        for k, c in colour.items()
    )
    legend += (
        '<span class="key"><i class="hatch"></i>waiting</span>'
        '<span class="key"><i class="hatch never"></i>never granted</span>'
        '<span class="key"><i class="closed"></i>cycle closed / finding</span>'
    )
    return (
        f'<figure class="tl"><div class="scroll">{svg}</div>'
        f'<div class="legend">{legend}</div></figure>'
    )


def _palette(keys: list[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def _frames(frames: list[str]) -> str:
    return "\n".join(frames) if frames else "(no stack recorded)"


def _stacks(pairs: list[tuple[str, list[str]]], summary: str = "stacks") -> str:
    blocks = "".join(
        f"<h4>{escape(title)}</h4><pre>{escape(_frames(frames))}</pre>" for title, frames in pairs
    )
    return f"<details><summary>{escape(summary)}</summary>{blocks}</details>"


def _deadlock(d: Deadlock) -> _Card:
    rows = []
    for t in d.tasks:
        w = t.waits_for
        holds = "<br>".join(
            f"{escape(lock_label(h.lock_class, h.lock_name))} since {stamp(h.since_ns)} "
            f"(<code>{escape(function(h.caller))}</code>)"
            for h in t.holds
        )
        rows.append(
            f"<tr><td>{escape(t.comm)}/{t.tid}</td>"
            f"<td>{escape(lock_label(w.lock_class, w.lock_name))}"
            f" since {stamp(w.since_ns)} in <code>{escape(function(w.caller))}</code></td>"
            f"<td>{t.waits_on_tid}</td><td>{holds or '-'}</td></tr>"
        )
    table = (
        "<table class='tasks'><tr><th>task</th><th>waits for</th><th>held by</th>"
        f"<th>holds</th></tr>{''.join(rows)}</table>"
    )
    stacks = _stacks(
        [(f"{t.comm}/{t.tid} waits at", t.waits_for.stack) for t in d.tasks]
        + [
            (f"{t.comm}/{t.tid} took {lock_label(h.lock_class, h.lock_name)} at", h.stack)
            for t in d.tasks
            for h in t.holds
        ]
    )
    marks = [((t.file, t.tid), t.waits_for.since_ns, f"{t.comm}/{t.tid} waits") for t in d.tasks]
    colour = _palette(
        [t.waits_for.lock_name for t in d.tasks] + [h.lock_name for t in d.tasks for h in t.holds]
    )
    return _Card(table + stacks, marks, colour, "deadlock")


def _inversion(inv: Inversion) -> _Card:
    tags = [inv.level]
    if inv.deadlocked:
        tags.append("deadlocked in this trace")
    if inv.same_task:
        tags.append("one task only")
    parts = [f"<p class='tags'>{escape(', '.join(tags))}</p>"]
    if inv.gate:
        parts.append(
            f"<p>Every edge was taken holding <b>{escape(inv.gate)}</b>: this cycle cannot "
            "deadlock.</p>"
        )
    tasks_txt = ", ".join(f"{t['comm']}/{t['tid']}" for t in inv.tasks)
    parts.append(f"<p>Tasks that took these orders: {escape(tasks_txt)}</p>")
    if len(inv.edges) == 2:
        parts.append(_scenario(inv.edges))
    for w in inv.edges:
        parts.append(_witness(w))
    marks = [((w.file, w.tid), w.ts_ns, f"{w.src} \u2192 {w.dst}") for w in inv.edges]
    return _Card("".join(parts), marks, _palette(inv.cycle), "cycle closed")


def _scenario(edges: list[Witness]) -> str:
    first, second = edges
    rows = "".join(
        f"<tr><td>{escape(left)}</td><td>{escape(right)}</td></tr>"
        for left, right in scenario_rows(edges)
    )
    return (
        "<table class='scenario'><caption>Possible unsafe locking scenario</caption>"
        f"<tr><th>CPU0: {escape(first.comm)}/{first.tid}</th>"
        f"<th>CPU1: {escape(second.comm)}/{second.tid}</th></tr>{rows}"
        "<tr><td colspan='2' class='dl'>*** DEADLOCK ***</td></tr></table>"
    )


def _witness(w: Witness) -> str:
    src = lock_label(w.src_class, w.src_name)
    dst = lock_label(w.dst_class, w.dst_name)
    return (
        f"<p class='witness'><b>{escape(w.src)} \u2192 {escape(w.dst)}</b>: "
        f"{escape(w.comm)}/{w.tid} at {stamp(w.ts_ns)} attempted {escape(dst)} in "
        f"<code>{escape(function(w.caller))}</code> holding {escape(src)} taken in "
        f"<code>{escape(function(w.held_caller))}</code></p>"
        + _stacks(
            [(f"attempted {dst} at", w.stack), (f"while holding {src}, taken at", w.held_stack)],
            f"stacks of {w.src} \u2192 {w.dst}",
        )
    )


def _anomaly(an: Anomaly) -> _Card:
    body = f"<p>{escape(an.comm)}/{an.tid} at {stamp(an.ts_ns)}: {escape(an.detail)}</p>" + _stacks(
        [("at", an.stack)], "stack"
    )
    return _Card(body, [((an.file, an.tid), an.ts_ns, an.kind)], _palette([an.lock_name]))
