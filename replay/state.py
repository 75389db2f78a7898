"""The replay state: traces replayed once, what every command starts from.

``analyze``, ``diff``, ``report``, ``analyze --format dot`` and ``export``
all begin with :func:`replay`: read the traces, keep the tasks and the time
window the :class:`Filters` select, and replay what is left.  The finders
(:mod:`~lktrace.replay.deadlocks`, :mod:`~lktrace.replay.inversions`,
:mod:`~lktrace.replay.anomalies`) are functions of a :class:`ReplayState`;
they read it and never change it, so one state serves any number of them.

What a state holds, every table as numpy arrays indexed by position:

- ``events`` (:class:`~lktrace.replay.events.Events`): every event, sorted by
  (task, time), with the lock, class, call site and stack of each.
- ``replay`` (:class:`~lktrace.replay.holds.Replay`, its holds also as
  ``holds``): hold intervals (when asked for, granted and released, so
  ``wait_ns`` and ``hold_ns``; nesting depth, so ``deepest`` per lock; where
  taken), each event's depth before it, the attempts still pending at the
  end (``blocked_tasks``), locks still held (``held_at_end``), releases of
  locks not held, and each file's end.
- ``pairs`` and ``graphs`` (built on first use, so ``export`` never pays for
  them): the ordering pairs (lock held, lock attempted) and, per level
  (``class``, ``instance``), the ordering edges with their counts and their
  occurrences in time order, the first being the edge's first witness.
- ``paths``: call paths (stack symbols without offsets) interned to ids,
  and ``hold_paths``, the call path that took each hold.
- ``notes``: what the input keeps from view (no release events, lost events).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.options import Level, values
from lktrace.replay.events import RELEASED, Events, load_events
from lktrace.replay.findings import LockRef, Witness
from lktrace.replay.graph import Graph, Pairs, build_graph, expand_ranges, ordering_pairs
from lktrace.replay.histogram import hold_histograms
from lktrace.replay.holds import Holds, Replay, pair
from lktrace.replay.paths import CallPaths
from lktrace.replay.witnesses import Witnesses
from lktrace.trace import Trace

LEVELS = values(Level)


@dataclass
class Filters:
    """What to replay: the graph levels, and which tasks and time window of each trace."""

    level: str = "both"
    comms: set[str] = field(default_factory=set)
    tids: set[int] = field(default_factory=set)
    since_s: float | None = None  # seconds from each trace's first event
    until_s: float | None = None

    @property
    def levels(self) -> tuple[str, ...]:
        return ("class", "instance") if self.level == "both" else (self.level,)


def select(trace: Trace, filters: Filters) -> Trace:
    """``trace`` restricted to the tasks and the time window of ``filters``."""
    t = trace.table
    masks = []
    if filters.comms:
        masks.append(pc.is_in(t["comm"].cast(pa.string()), pa.array(sorted(filters.comms))))
    if filters.tids:
        masks.append(pc.is_in(t["tid"], pa.array(sorted(filters.tids), pa.int32())))
    if t.num_rows:
        first = pc.min(t["ts_ns"]).as_py()
        if filters.since_s is not None:
            masks.append(pc.greater_equal(t["ts_ns"], first + int(filters.since_s * 1e9)))
        if filters.until_s is not None:
            masks.append(pc.less(t["ts_ns"], first + int(filters.until_s * 1e9)))
    if not masks:
        return trace
    return Trace(trace.path, t.filter(functools.reduce(pc.and_, masks)), trace.meta)


def replay(
    traces: Iterable[Trace], filters: Filters | None = None, drop_tables: bool = False
) -> ReplayState:
    """Replay one trace, or several as one merged state, as ``filters`` select.

    ``drop_tables`` empties each trace's table once read: with a generator of
    traces, only one file's table is in memory at a time.
    """
    filters = filters or Filters()
    events = load_events((select(t, filters) for t in traces), drop_tables)
    return ReplayState(events, filters)


class ReplayState:
    """Events replayed into holds, ordering pairs and graphs; see the module docstring."""

    def __init__(self, events: Events, filters: Filters) -> None:
        self.filters = filters
        self.events = events
        self.replay: Replay = pair(events)
        self.no_releases = [
            t.path.name for t in events.traces if t.meta.extra.get("releases") == "no"
        ]
        self.task_file = events.tasks["file"].to_numpy()
        self.task_tids = events.tasks["tid"].tolist()
        self.task_comms = events.tasks["comm"].tolist()

    @property
    def holds(self) -> Holds:
        return self.replay.holds

    @cached_property
    def pairs(self) -> Pairs:
        if self.no_releases:  # held sets and depths are unknown without release events
            none = np.zeros(0, np.int64)
            return Pairs(none, none)
        return ordering_pairs(self.events, self.holds, self.replay.depth_before)

    @cached_property
    def graphs(self) -> dict[str, Graph]:
        """The ordering graph of each level the filters ask for."""
        levels, pairs = self.filters.levels, self.pairs
        with ThreadPoolExecutor(len(levels)) as pool:  # numpy sorts release the GIL
            built = {
                lv: pool.submit(build_graph, self.events, self.holds, pairs, lv) for lv in levels
            }
            return {lv: f.result() for lv, f in built.items()}

    @cached_property
    def notes(self) -> tuple[str, ...]:
        """What the input keeps from view, one line each."""
        notes = []
        if self.no_releases:
            notes.append(
                "no release events in "
                + ", ".join(self.no_releases)
                + " (tracepoint backend: contended acquisitions only): "
                "lock ordering and hold times cannot be rebuilt"
            )
        for t in self.events.traces:
            if t.meta.lost_events:
                notes.append(
                    f"{t.path.name}: {t.meta.lost_events} events were lost while "
                    "recording; some orderings may be missing"
                )
        return tuple(notes)

    @cached_property
    def paths(self) -> CallPaths:
        return CallPaths(self.events)

    @cached_property
    def hold_paths(self) -> np.ndarray:
        """Per hold, the id (in ``paths``) of the call path that took it."""
        return self.paths.at(self.holds.origin)

    @cached_property
    def blocked_tasks(self) -> set[int]:
        """Tasks whose last event is an attempt never granted."""
        return {int(t) for t in self.events.task[self.replay.pending]}

    @property
    def wait_ns(self) -> np.ndarray:
        """Per hold, how long its task waited for it (0 when granted at once or unknown)."""
        return self.holds.acquired_ts - self.holds.attempt_ts

    @property
    def hold_ns(self) -> np.ndarray:
        """Per hold, how long it was held (to the end of its trace when never released)."""
        return self.holds.released_ts - self.holds.acquired_ts

    @cached_property
    def deepest(self) -> np.ndarray:
        """Per lock instance, the deepest any task nested it (0: never acquired)."""
        out = np.zeros(len(self.events.inst_name), np.int32)
        np.maximum.at(out, self.holds.inst, self.holds.depth)
        return out

    @property
    def held_at_end(self) -> np.ndarray:
        """Holds (outermost level) still held when their trace ended."""
        h = self.holds
        return np.flatnonzero(~h.released & (h.depth == 1))

    # -- what finders aggregate over every occurrence ------------------------

    @cached_property
    def _pairs_by_attempt(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.pairs.attempt, kind="stable")
        return order, self.pairs.attempt[order]

    def gates(self, graph: Graph, edge: int) -> set[int]:
        """Instances held at every occurrence of ``edge``, besides the edge's own locks."""
        pairs, holds = self.pairs, self.holds
        occ = graph.edge_occurrences(edge)
        order, sorted_att = self._pairs_by_attempt
        att = pairs.attempt[occ]
        which, at = expand_ranges(
            np.searchsorted(sorted_att, att, "left"), np.searchsorted(sorted_att, att, "right")
        )
        held = holds.inst[pairs.hold[order[at]]]
        own = holds.inst[pairs.hold[occ]][which]
        other = held != own
        both = np.unique(np.c_[which[other], held[other]], axis=0)
        insts, n = np.unique(both[:, 1], return_counts=True) if len(both) else ([], [])
        return {int(i) for i, c in zip(insts, n, strict=True) if c == len(occ)}

    def edge_tasks(self, graph: Graph, edge: int) -> set[int]:
        """Every task that took ``edge``."""
        occ = graph.edge_occurrences(edge)
        return set(np.unique(self.events.task[self.pairs.attempt[occ]]).tolist())

    def release_owners(self) -> tuple[dict[int, int], set[int]]:
        """Of the releases of locks not held: the task holding the lock then (by position),
        and the positions that end a hold from before the trace began."""
        ev, h = self.events, self.holds
        exc = self.replay.excess
        pre = set(h.end[h.before_start].tolist())
        holds = pd.DataFrame(
            {
                "file": self.task_file[h.task],
                "inst": h.inst,
                "task": h.task,
                "acq": h.acquired_ts,
                "rel": h.released_ts,
                "before": h.before_start,
            }
        )
        holds = holds[~holds["before"]]
        rel = pd.DataFrame(
            {
                "pos": exc,
                "file": ev.file[exc],
                "inst": ev.inst[exc],
                "rtask": ev.task[exc],
                "ts": ev.ts[exc],
            }
        )
        m = rel.merge(holds, on=["file", "inst"])
        m = m[(m["acq"] <= m["ts"]) & (m["ts"] <= m["rel"]) & (m["task"] != m["rtask"])]
        return dict(zip(m["pos"].tolist(), m["task"].tolist(), strict=False)), pre

    def counts(self) -> dict[str, int]:
        """Events, tasks, lock instances and classes (as locks were taken) replayed."""
        ev = self.events
        return {
            "events": len(ev),
            "tasks": len(ev.tasks),
            "locks": len(ev.inst_name),
            # a release's class names its unlock site: count the classes locks were taken as
            "classes": len(np.unique(ev.cls[ev.event != RELEASED])),
        }

    def inst_classes(self) -> np.ndarray:
        """Per instance, a class it was taken as (the last one seen)."""
        ev = self.events
        out = np.zeros(len(ev.inst_name), np.int64)
        out[ev.inst] = ev.cls
        return out

    def taken(self) -> np.ndarray:
        """Distinct (class, instance, call path id) rows of every acquisition."""
        h = self.holds
        return np.unique(np.c_[h.cls, h.inst, self.hold_paths].astype(np.int64), axis=0)

    def ordering_paths(self, graph: Graph) -> tuple[np.ndarray, ...]:
        """Per (edge, call path that held its source): edge, path id, first pair, count."""
        width = max(len(self.paths), 1)
        occ = graph.occurrences
        edge = np.repeat(np.arange(len(graph), dtype=np.int64), graph.count)
        combo = edge * width + self.hold_paths[self.pairs.hold[occ]]
        uniq, first, count = np.unique(combo, return_index=True, return_counts=True)
        return uniq // width, uniq % width, occ[first], count

    def timing(self) -> dict[str, np.ndarray]:
        """Wait (kind 0) and hold (kind 1) time histograms per class (see ``reduce.bucket``)."""
        h = self.holds
        # without release events every acquisition looks nested: take them all
        return hold_histograms(h, ~h.before_start & ((h.depth == 1) | bool(self.no_releases)))

    # -- positions described for people ------------------------------------

    def file_name(self, pos: int) -> str:
        return str(self.events.traces[self.events.file[pos]].path)

    def task(self, task: int) -> tuple[int, str]:
        """(tid, comm) of a task index."""
        return self.task_tids[task], self.task_comms[task]

    def lock_ref(self, hold: int) -> LockRef:
        """A hold as a :class:`LockRef`: the lock, since when, where it was taken."""
        h, ev = self.holds, self.events
        origin = int(h.origin[hold])
        return LockRef(
            lock_class=ev.classes[h.cls[hold]],
            lock_name=ev.names[ev.inst_name[h.inst[hold]]],
            since_ns=int(h.acquired_ts[hold]),
            caller=ev.callers[ev.caller[origin]] if origin >= 0 else "",
            stack=ev.stack_frames(origin) if origin >= 0 else [],
        )

    def attempt_ref(self, pos: int) -> LockRef:
        """An event as a :class:`LockRef`: the lock it asked for, when and where."""
        ev = self.events
        return LockRef(
            lock_class=ev.classes[ev.cls[pos]],
            lock_name=ev.names[ev.name[pos]],
            since_ns=int(ev.ts[pos]),
            caller=ev.callers[ev.caller[pos]],
            stack=ev.stack_frames(pos),
        )

    def edge_nodes(self, level: str, p: int | np.ndarray) -> tuple:
        """The (from, to) nodes of ordering pair(s) ``p`` at ``level``: ints, or arrays
        for an array of pairs."""
        hold, pos = self.pairs.hold[p], self.pairs.attempt[p]
        if level == "class":
            src, dst = self.holds.cls[hold], self.events.cls[pos]
        else:
            src, dst = self.holds.inst[hold], self.events.inst[pos]
        return (src, dst) if np.ndim(p) else (int(src), int(dst))

    def witness(self, level: str, p: int) -> Witness:
        """The :class:`Witness` of ordering pair ``p``, its nodes named at ``level``."""
        return Witnesses(self, level, np.array([p]))[0]
