"""Print a :class:`Diff` for people: the verdict first, then what changed, worst first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lktrace.console import fmt_count, fmt_ns
from lktrace.replay.changes import (
    CallPath,
    CycleChange,
    DepthChange,
    Diff,
    Nesting,
    OrderingChange,
)
from lktrace.replay.render import _stack, _witness

VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "same": "bold"}
PATH_FRAMES = 4  # call-path frames shown on one line


def path_label(path: CallPath, frames: int = PATH_FRAMES) -> str:
    """A call path on one line, call site first: ``sriov_del_vfs < sriov_disable < …``."""
    if not path:
        return "(unknown path)"
    return " < ".join(path[:frames]) + (" < …" if len(path) > frames else "")


def tally(d: Diff) -> str:
    """The counts behind the verdict, in one line."""
    depth = {k: sum(c.change == k for c in d.depth_changes) for k in ("better", "worse")}
    return (
        f"inversions: {len(d.inversions_fixed)} fixed, {len(d.inversions_introduced)} introduced, "
        f"{len(d.inversions_remaining)} remaining; nesting: {depth['better']} better, "
        f"{depth['worse']} worse; orderings: {len(d.edges_added)} added, "
        f"{len(d.edges_removed)} removed, {len(d.not_exercised)} not exercised"
    )


def render_diff(d: Diff, console: Console) -> None:
    """Verdict, the two traces, then inversions, nesting, orderings and timing."""
    console.print(f"[{VERDICT_STYLE[d.verdict]}]verdict: {d.verdict}[/] ({tally(d)})")
    for label, traces in (("old", d.old), ("new", d.new)):
        for t in traces:
            console.print(f"  {label} {_trace_line(t)}")
    for note in d.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    for title, style, changes in (
        ("INTRODUCED", "bold red", d.inversions_introduced),
        ("FIXED", "bold green", d.inversions_fixed),
        ("REMAINING", "bold yellow", d.inversions_remaining),
        ("NOT EXERCISED", "dim", d.inversions_not_exercised),
    ):
        for i, c in enumerate(changes, 1):
            _cycle(console, f"[{style}]INVERSION {title} {i}[/]", c, evidence=title != "REMAINING")
    for c in d.depth_changes:
        _depth(console, c)
    for o in d.edges_added:
        _ordering(console, "ADDED", o, "new edge")
    for o in d.edges_removed:
        _ordering(console, "REMOVED", o, "edge gone")
    if d.not_exercised:
        console.print("\n[dim]NOT EXERCISED[/]: gone, but the new trace never took the lock there")
        for o in d.not_exercised:
            console.print(
                f"  {escape(o.src)} -> {escape(o.dst)} ({o.level}) via {escape(path_label(o.path))}"
            )
    if d.timing:
        _timing(console, d)


def _trace_line(t: dict[str, Any]) -> str:
    kernel = " ".join(p for p in (t["kernel"], t["kernel_version"]) if p) or "unknown"
    return escape(
        f"{t['file']}: kernel {kernel}, {fmt_count(t['events'])} events "
        f"over {fmt_ns(t['span_ns'])}, lost {fmt_count(t['lost_events'])}"
    )


def _cycle(console: Console, title: str, c: CycleChange, evidence: bool) -> None:
    tags = [c.level]
    if c.deadlocked:
        tags.append("[red]deadlocked[/]")
    if not c.exercised and any(e.status == "added" for e in c.edges):
        tags.append("the old trace never ran its new path")
    arrow = " -> ".join(escape(n) for n in [*c.cycle, c.cycle[0]])
    console.print(f"\n{title}: {arrow}  ({', '.join(tags)})")
    for e in c.edges:
        console.print(
            f"  {escape(e.src)} -> {escape(e.dst)} [bold]{e.status}[/] "
            f"via {escape(path_label(e.path))}"
        )
    if evidence:
        for e in c.edges:
            _witness(console, e.witness)


def _nesting(n: Nesting) -> str:
    return {
        "unseen": "path not run",
        "none": "not nested",
        "self_deadlock": f"self-deadlock at depth {n.depth}",
    }.get(n.kind, f"{n.kind.replace('_', ' ')} to depth {n.depth}")


def _depth(console: Console, c: DepthChange) -> None:
    style = {"better": "bold green", "worse": "bold red"}.get(c.change, "bold yellow")
    lock = c.lock_class if c.lock_class == c.lock_name else f"{c.lock_class} {c.lock_name}"
    console.print(
        f"\n[{style}]NESTING {c.change.upper().replace('_', ' ')}[/]: [bold]{escape(lock)}[/] "
        f"via {escape(path_label(c.path))}: {_nesting(c.old)} -> {_nesting(c.new)}"
    )
    for label, n in (("old", c.old), ("new", c.new)):
        if n.stack:
            _stack(console, f"{label}: {n.comm}/{n.tid} at:", n.stack)


def _ordering(console: Console, title: str, o: OrderingChange, alone: str) -> None:
    extra = "" if o.edge_in_both else f", {alone}"
    console.print(
        f"\n[bold]ORDERING {title}[/]: {escape(o.src)} -> {escape(o.dst)} ({o.level}{extra}) "
        f"via {escape(path_label(o.path))}, {fmt_count(o.count)} time(s)"
    )
    _witness(console, o.witness)


def _timing(console: Console, d: Diff) -> None:
    table = Table(title="wait and hold times (old -> new)", title_justify="left")
    for col in ("lock class", "count", "wait p50", "wait p99", "hold p50", "hold p99"):
        table.add_column(col, justify="left" if col == "lock class" else "right")

    def cell(old: int | None, new: int | None, fmt=fmt_ns) -> str:
        if old is None or new is None:
            return "-"
        return f"{fmt(old)} -> {fmt(new)}"

    for t in d.timing:
        table.add_row(
            escape(t.lock_class),
            cell(t.old["count"], t.new["count"], fmt_count),
            *(cell(t.old[k], t.new[k]) for k in ("wait_p50", "wait_p99", "hold_p50", "hold_p99")),
        )
    console.print()
    console.print(table)
