"""Each finding of a report as an HTML card: its text, stacks and timeline.

A card's title comes from :func:`titled` (the order and numbering of
``analyze``); its timeline shows the tasks involved around the moments the
finding points at (:mod:`~lktrace.replay.timeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from lktrace.console import fmt_count
from lktrace.replay.dot import function
from lktrace.replay.findings import ERROR_KINDS, Analysis, Anomaly, Deadlock, Inversion, Witness
from lktrace.replay.identity import Finding
from lktrace.replay.render import (
    cycle_text,
    headline,
    lock_label,
    longer_cycles,
    scenario_rows,
    stamp,
)
from lktrace.replay.timeline import Mark, Timelines

MAX_CARDS = 40  # findings drawn with a timeline; the rest are listed
MAX_ROWS = 500  # findings listed at most
ARROW = " \u2192 "
PALETTE = ("#1e88e5", "#f4511e", "#8e24aa", "#43a047", "#fb8c00", "#00897b", "#6d4c41")


def titled(a: Analysis) -> list[tuple[Finding, str]]:
    out: list[tuple[Finding, str]] = []
    for i, d in enumerate(a.deadlocks, 1):
        locks = ", ".join(t.waits_for.lock_name for t in d.tasks)
        out.append((d, f"Deadlock {i} (happened): {len(d.tasks)} tasks waiting on {locks}"))
    for group, word in ((a.inversions, "Inversion"), (a.guarded, "Guarded cycle")):
        for i, inv in enumerate(group, 1):
            out.append((inv, f"{word} {i}: {headline(inv, ARROW)} ({inv.level})"))
    for an in a.anomalies:
        lock = lock_label(an.lock_class, an.lock_name)
        out.append((an, f"{an.kind}: {an.comm}/{an.tid} on {lock}"))
    return out


def is_error(f: Finding) -> bool:
    if isinstance(f, Inversion):
        return f.gate is None
    return isinstance(f, Deadlock) or f.kind in ERROR_KINDS


def status_badge(f: Finding, status: Callable | None) -> str:
    if status is None:
        return ""
    st = status(f)
    return f' <span class="badge {st}">{ {"kept": "in both"}.get(st, st) }</span>'


def findings_html(
    timelines: Timelines,
    a: Analysis,
    prefix: str,
    status: Callable | None = None,
    figures: Sequence[str] = (),
) -> str:
    """A card per finding, up to :data:`MAX_CARDS` (with ``figures[i]``, the
    drawing of the i-th), then a list of the rest."""
    cards = []
    rows = []
    for i, (f, title) in enumerate(titled(a)):
        if i < MAX_CARDS:
            figure = figures[i] if i < len(figures) else ""
            badge = status_badge(f, status)
            cards.append(_card(timelines, f, title, f"{prefix}-f{i}", badge, figure))
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


def _card(tl: Timelines, f: Finding, title: str, anchor: str, badge: str, figure: str) -> str:
    if isinstance(f, Deadlock):
        card = _deadlock(f, figure)
    elif isinstance(f, Inversion):
        card = _inversion(f, figure)
    else:
        card = _anomaly(f)
    cls = "err" if is_error(f) else "warn"
    return (
        f'<article class="finding {cls}" id="{anchor}"><h3>{escape(title)}{badge}</h3>'
        f"{card.body}{_timeline(tl, card, anchor)}</article>"
    )


def _timeline(tl: Timelines, card: _Card, uid: str) -> str:
    """A lane per task named by the marks, around them; the latest mark is the moment
    the cycle closed."""
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


def _deadlock(d: Deadlock, figure: str) -> _Card:
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
    return _Card(figure + table + stacks, marks, colour, "deadlock")


def _inversion(inv: Inversion, figure: str) -> _Card:
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
    seen = ", ".join(fmt_count(n) for n in inv.counts)
    parts.append(
        f"<p class='cycle'>Cycle: {escape(cycle_text(inv.cycle, ARROW))}"
        + (f" (seen {seen})" if seen else "")
        + "</p>"
    )
    more = longer_cycles(inv)
    if more:
        rows = "".join(f"<li>{escape(cycle_text(c, ARROW))}</li>" for c in inv.cycles[1:])
        parts.append(
            f"<details class='cycles'><summary>{escape(more)}</summary><ol>{rows}</ol></details>"
        )
    tasks_txt = ", ".join(f"{t['comm']}/{t['tid']}" for t in inv.tasks)
    parts.append(f"<p>Tasks that took these orders: {escape(tasks_txt)}</p>")
    scenario = _scenario(inv.edges) if len(inv.edges) == 2 else ""
    parts.append(f'<div class="glance">{figure}{scenario}</div>')
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
