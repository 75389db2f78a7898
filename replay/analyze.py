"""``lktrace analyze``: every finder run on one replay state, gathered into an Analysis.

:func:`analyze` replays the traces (:func:`~lktrace.replay.state.replay`)
and :func:`analysis` runs the finders on the state: deadlocks that happened
(:mod:`~lktrace.replay.deadlocks`), lock-order inversions
(:mod:`~lktrace.replay.inversions`) and reentrancy anomalies
(:mod:`~lktrace.replay.anomalies`).  The state is only read, so
:func:`analysis` can run on it any number of times with the same result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lktrace.options import MAX_CYCLES, MAX_DEPTH
from lktrace.replay.anomalies import find_anomalies
from lktrace.replay.deadlocks import find_deadlocks
from lktrace.replay.events import RELEASED
from lktrace.replay.findings import Analysis, Inversion
from lktrace.replay.inversions import find_inversions
from lktrace.replay.state import LEVELS, Filters, ReplayState, replay
from lktrace.trace import Trace

__all__ = ["LEVELS", "Options", "analysis", "analyze"]


@dataclass
class Options(Filters):
    """What to replay (:class:`Filters`) and how to judge it."""

    max_depth: int = MAX_DEPTH
    max_cycles: int = MAX_CYCLES
    classes: set[str] = field(default_factory=set)  # report only findings on these classes


def analyze(
    traces: Iterable[Trace], opts: Options | None = None, drop_tables: bool = False
) -> Analysis:
    """Analyse one trace, or several as one merged graph (see :func:`replay`)."""
    opts = opts or Options()
    return analysis(replay(traces, opts, drop_tables), opts)


def analysis(state: ReplayState, opts: Options) -> Analysis:
    """Run every finder on ``state``."""
    ev = state.events
    notes = list(state.notes)
    deadlocks, links = find_deadlocks(state)
    inversions: list[Inversion] = []
    for level in state.graphs:
        found, how = find_inversions(state, level, links, opts.max_cycles)
        inversions += found
        notes += how
    anomalies = find_anomalies(state, opts.max_depth)
    if opts.classes:
        wanted = opts.classes
        inversions = [i for i in inversions if wanted & {w.src_class for w in i.edges}]
        anomalies = [a for a in anomalies if a.lock_class in wanted]
        deadlocks = [d for d in deadlocks if wanted & {t.waits_for.lock_class for t in d.tasks}]
    inversions.sort(key=rank)
    graphs = state.graphs
    return Analysis(
        traces=[_trace_info(t, span) for t, span in zip(ev.traces, ev.spans, strict=True)],
        summary={
            "events": len(ev),
            "tasks": len(ev.tasks),
            "locks": len(ev.inst_name),
            # a release's class names its unlock site: count the classes locks were taken as
            "classes": len(np.unique(ev.cls[ev.event != RELEASED])),
            "edges": len(graphs.get("class", next(iter(graphs.values())))),
        },
        notes=notes,
        deadlocks=deadlocks,
        inversions=[i for i in inversions if i.gate is None],
        guarded=[i for i in inversions if i.gate is not None],
        anomalies=anomalies,
    )


def rank(inv: Inversion) -> tuple:
    """Inversions in the order to read them: deadlocked, closed on the very same locks,
    class-only; within each, the rarer the suspect ordering the sooner."""
    seen = inv.suspect.count if inv.suspect else 0
    return (not inv.deadlocked, not inv.same_instances, seen, len(inv.cycle), inv.level, inv.cycle)


def _trace_info(t: Trace, span: tuple[int, int, int]) -> dict:
    m = t.meta
    events, first, last = span
    return {
        "file": str(t.path),
        "kernel": m.kernel,
        "kernel_version": m.kernel_version,
        "host": m.host,
        "started_at": m.started_at,
        "duration_ns": m.duration_ns,
        "span_ns": last - first,
        "events": events,
        "probes": m.probes,
        "lost_events": m.lost_events,
        "command": m.command,
        **m.extra,
    }
