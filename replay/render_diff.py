"""Print a :class:`Diff` for people: the verdict first, then what changed, worst first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

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
    Timing,
)
from lktrace.replay.render import print_stack, print_witness

VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "same": "bold"}
PATH_FRAMES = 4  # call-path frames shown on one line
T = TypeVar("T")


def path_label(path: CallPath, frames: int = PATH_FRAMES, skip: int = 0) -> str:
    """A call path on one line, call site first: ``sriov_del_vfs < sriov_disable < …``.

    With ``skip``, the frames from ``frames`` up to ``skip`` (shared with
    other paths listed next to it) are elided so that where it differs shows.
    """
    if not path:
        return "(unknown path)"
    if skip < frames:
        return " < ".join(path[:frames]) + (" < …" if len(path) > frames else "")
    rest = path_label(path[skip:], 2) if skip < len(path) else ""
    return " < ".join(path[: frames - 1]) + " < … < " + rest if rest else " < ".join(path)


def path_labels(paths: list[CallPath]) -> list[str]:
    """Labels for paths shown together: each one long enough to tell it from the others."""
    shared = [
        max((_common(p, q) for j, q in enumerate(paths) if j != i), default=0)
        for i, p in enumerate(paths)
    ]
    return [path_label(p, skip=n) for p, n in zip(paths, shared, strict=True)]


def _common(p: CallPath, q: CallPath) -> int:
    """How many leading frames ``p`` and ``q`` share."""
    n = 0
    while n < min(len(p), len(q)) and p[n] == q[n]:
        n += 1
    return n


def tally(d: Diff) -> str:
    """The counts behind the verdict, in one line."""
    depth = {k: sum(c.change == k for c in d.depth_changes) for k in ("better", "worse")}
    return (
        f"inversions: {len(d.inversions_fixed)} fixed, {len(d.inversions_introduced)} introduced, "
        f"{len(d.inversions_remaining)} remaining; nesting: {depth['better']} better, "
        f"{depth['worse']} worse; orderings: {len(d.edges_added) + len(d.paths_added)} added, "
        f"{len(d.edges_removed) + len(d.paths_removed)} removed, "
        f"{len(d.not_exercised)} not exercised, {len(d.new_coverage)} new coverage"
    )


def render_diff(d: Diff, console: Console, limit: int = 50) -> None:
    """Verdict, the two traces, then inversions, nesting, orderings and timing.

    Each section lists at most ``limit`` entries (0: all); JSON has them all.
    """
    console.print(
        f"[{VERDICT_STYLE[d.verdict]}]verdict: {d.verdict}[/] ({tally(d)})", soft_wrap=True
    )
    for label, traces in (("old", d.old), ("new", d.new)):
        for t in traces:
            console.print(f"  {label} {_trace_line(t)}")
    for note in d.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")

    def capped(items: Sequence[T]) -> Sequence[T]:
        return items[:limit] if limit else items

    def more(items: Sequence[object]) -> None:
        if limit and len(items) > limit:
            console.print(f"  [dim]… {len(items) - limit} more (--format json lists all)[/]")

    for title, style, changes in (
        ("INTRODUCED", "bold red", d.inversions_introduced),
        ("FIXED", "bold green", d.inversions_fixed),
        ("REMAINING", "bold yellow", d.inversions_remaining),
        ("NOT EXERCISED", "dim", d.inversions_not_exercised),
    ):
        for i, c in enumerate(capped(changes), 1):
            _cycle(console, f"[{style}]INVERSION {title} {i}[/]", c, evidence=title != "REMAINING")
        more(changes)
    for c in capped(d.depth_changes):
        _depth(console, c)
    more(d.depth_changes)
    for title, orderings in (("EDGE ADDED", d.edges_added), ("EDGE REMOVED", d.edges_removed)):
        for o in capped(orderings):
            _ordering(console, title, o)
        more(orderings)
    for title, orderings in (
        ("PATHS ADDED: known edges the new trace also took on", d.paths_added),
        ("PATHS REMOVED: the new trace ran these and no longer did", d.paths_removed),
        (
            "NOT EXERCISED: gone, but the new trace never took the first lock on that call path",
            d.not_exercised,
        ),
        (
            "NEW COVERAGE: new, on call paths the old trace never took the first lock on",
            d.new_coverage,
        ),
    ):
        _orderings(console, title, capped(orderings))
        more(orderings)
    if d.timing:
        _timing(console, capped(d.timing))
        more(d.timing)


def _trace_line(t: dict[str, Any]) -> str:
    kernel = " ".join(p for p in (t["kernel"], t["kernel_version"]) if p) or "unknown"
    return escape(
        f"{t['file']}: kernel {kernel}, {fmt_count(t['events'])} events "
        f"over {fmt_ns(t['span_ns'])}, lost {fmt_count(t['lost_events'])}"
    )


def _cycle(console: Console, title: str, c: CycleChange, evidence: bool) -> None:
    tags = [c.level]
    for side, hung in (("old", c.deadlocked_old), ("new", c.deadlocked_new)):
        if hung:
            tags.append(f"[red]deadlocked in {side}[/]")
    if c.gate:
        tags.append(f"now always taken under {escape(c.gate)}")
    if not c.exercised and any(e.status == "added" for e in c.edges):
        tags.append("the old trace never ran its new call paths")
    arrow = " -> ".join(escape(n) for n in [*c.cycle, c.cycle[0]])
    console.print(f"\n{title}: {arrow}  ({', '.join(tags)})")
    for e in c.edges:
        console.print(f"  {escape(e.src)} -> {escape(e.dst)}: [bold]{e.status}[/]")
        labels = path_labels([p.path for p in e.paths])
        for p, label in zip(e.paths, labels, strict=True):
            console.print(f"    {p.status:<14}{escape(label)}")
    if evidence:
        for e in c.edges:
            print_witness(console, e.witness, True)


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
    label, n = ("new", c.new) if c.new.stack else ("old", c.old)
    print_stack(console, f"{label}: {n.comm}/{n.tid} at:", n.stack)


def _ordering(console: Console, title: str, o: OrderingChange) -> None:
    console.print(
        f"\n[bold]{title}[/]: {escape(o.src)} -> {escape(o.dst)} ({o.level}) "
        f"via {escape(path_label(o.path))}, {fmt_count(o.count)} time(s)"
    )
    print_witness(console, o.witness, True)


def _orderings(console: Console, title: str, orderings: Sequence[OrderingChange]) -> None:
    """One line per ordering, under a title saying what they are."""
    if not orderings:
        return
    head, _, rest = title.partition(":")
    console.print(f"\n[bold]{head}[/]:{escape(rest)}")
    for o in orderings:
        console.print(
            f"  {escape(o.src)} -> {escape(o.dst)} ({o.level}) via {escape(path_label(o.path))}"
        )


def _timing(console: Console, timing: Sequence[Timing]) -> None:
    table = Table(title="wait and hold times", title_justify="left", box=None)
    table.add_column("lock class", overflow="fold")
    for col in ("trace", "count", "wait p50", "wait p99", "hold p50", "hold p99"):
        table.add_column(col, justify="left" if col == "trace" else "right", no_wrap=True)
    for t in timing:
        for label, side in (("old", t.old), ("new", t.new)):
            table.add_row(
                escape(t.lock_class) if label == "old" else "",
                label,
                fmt_count(side["count"] or 0),
                *(
                    "-" if side[k] is None else fmt_ns(side[k])
                    for k in ("wait_p50", "wait_p99", "hold_p50", "hold_p99")
                ),
            )
    console.print()
    console.print(table)
