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
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.options import Level, values
from lktrace.replay.events import Events, load_events
from lktrace.replay.findings import LockRef, Witness
from lktrace.replay.graph import Graph, Pairs, build_graph, ordering_pairs
from lktrace.replay.holds import Holds, Replay, pair
from lktrace.replay.paths import CallPaths
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
        self._tids = events.tasks["tid"].tolist()
        self._comms = events.tasks["comm"].tolist()

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

    # -- positions described for people ------------------------------------

    def file_name(self, pos: int) -> str:
        return str(self.events.traces[self.events.file[pos]].path)

    def task(self, task: int) -> tuple[int, str]:
        """(tid, comm) of a task index."""
        return self._tids[task], self._comms[task]

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

    def edge_nodes(self, level: str, p: int) -> tuple[int, int]:
        """The (from, to) nodes of ordering pair ``p`` at ``level``."""
        hold, pos = self.pairs.hold[p], self.pairs.attempt[p]
        if level == "class":
            return int(self.holds.cls[hold]), int(self.events.cls[pos])
        return int(self.holds.inst[hold]), int(self.events.inst[pos])

    def witness(self, level: str, p: int) -> Witness:
        """The :class:`Witness` of ordering pair ``p``, its nodes named at ``level``."""
        hold, pos = int(self.pairs.hold[p]), int(self.pairs.attempt[p])
        held, want = self.lock_ref(hold), self.attempt_ref(pos)
        labels = self.graphs[level].labels
        src, dst = self.edge_nodes(level, p)
        tid, comm = self.task(int(self.events.task[pos]))
        return Witness(
            src=labels[src],
            dst=labels[dst],
            src_class=held.lock_class,
            dst_class=want.lock_class,
            src_name=held.lock_name,
            dst_name=want.lock_name,
            tid=tid,
            comm=comm,
            ts_ns=want.since_ns,
            caller=want.caller,
            held_caller=held.caller,
            stack=want.stack,
            held_stack=held.stack,
            file=self.file_name(pos),
        )
