"""``lktrace info``: what a trace holds, without analysing it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from rich.markup import escape
from rich.table import Table

from lktrace.console import fmt_count, fmt_ns, out
from lktrace.trace import Trace


def _counts(column: pa.ChunkedArray) -> list[tuple[str, int]]:
    vc = pc.value_counts(
        column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column
    )
    pairs = zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    return sorted(pairs, key=lambda p: (-p[1], str(p[0])))


def summarize(trace: Trace) -> dict[str, Any]:
    """Counts by event, api and class, tasks and the time span of ``trace``."""
    t = trace.table
    span = (pc.min(t["ts_ns"]).as_py(), pc.max(t["ts_ns"]).as_py()) if t.num_rows else (0, 0)
    tasks = (
        t.group_by(["tid", "comm"])
        .aggregate([("seq", "count")])
        .sort_by([("seq_count", "descending"), ("tid", "ascending")])
    )
    return {
        "file": str(trace.path),
        "events": t.num_rows,
        "first_ns": span[0],
        "last_ns": span[1],
        "span_ns": span[1] - span[0],
        "by_event": _counts(t["event"]),
        "by_api": _counts(t["api"]),
        "by_class": _counts(t["lock_class"]),
        "locks": pc.count_distinct(t["lock_addr"]).as_py(),
        "tasks": [
            (tid, comm, n)
            for tid, comm, n in zip(
                tasks["tid"].to_pylist(),
                tasks["comm"].to_pylist(),
                tasks["seq_count"].to_pylist(),
                strict=True,
            )
        ],
        "stacks": len(trace.meta.stacks),
    }


def metadata_rows(trace: Trace) -> list[tuple[str, str]]:
    """The recording's context as label/value pairs, for headers."""
    m = trace.meta
    rows = [
        ("kernel", " ".join(p for p in (m.kernel, m.kernel_version) if p) or "unknown"),
        ("host", m.host or "unknown"),
        ("started", m.started_at or "unknown"),
        ("duration", fmt_ns(m.duration_ns) if m.duration_ns else "unknown"),
        ("command", m.command or "unknown"),
        ("probes", ", ".join(m.probes) or "none listed"),
        ("lost events", fmt_count(m.lost_events)),
    ]
    rows += [(k, v) for k, v in sorted(m.extra.items())]
    return rows


def print_info(trace: Trace, max_rows: int = 15) -> None:
    """Print the metadata and the counts of ``trace``."""
    s = summarize(trace)
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]trace[/]", escape(s["file"]))
    for label, value in metadata_rows(trace):
        head.add_row(f"[bold]{label}[/]", escape(value))
    head.add_row(
        "[bold]events[/]",
        f"{fmt_count(s['events'])} over {fmt_ns(s['span_ns'])}, "
        f"{len(s['tasks'])} tasks, {fmt_count(s['locks'])} lock addresses, "
        f"{fmt_count(s['stacks'])} stacks",
    )
    out.print(head)
    if trace.meta.lost_events:
        out.print(
            f"[yellow]warning:[/] {fmt_count(trace.meta.lost_events)} events were lost "
            "while recording; orderings may be missing"
        )
    for title, key in (("event", "by_event"), ("api", "by_api"), ("lock class", "by_class")):
        out.print(_count_table(title, s[key], max_rows))
    tasks = Table(title="tasks", title_justify="left", box=None)
    tasks.add_column("tid", justify="right")
    tasks.add_column("comm")
    tasks.add_column("events", justify="right")
    for tid, comm, n in s["tasks"][:max_rows]:
        tasks.add_row(str(tid), escape(comm), fmt_count(n))
    _more(tasks, len(s["tasks"]) - max_rows)
    out.print(tasks)


def _count_table(title: str, pairs: list[tuple[str, int]], max_rows: int) -> Table:
    table = Table(title=title, title_justify="left", box=None)
    table.add_column(title)
    table.add_column("events", justify="right")
    for value, n in pairs[:max_rows]:
        table.add_row(escape(str(value)), fmt_count(n))
    _more(table, len(pairs) - max_rows)
    return table


def _more(table: Table, hidden: int) -> None:
    if hidden > 0:
        table.add_row(f"[dim]… {hidden} more[/]", "")
