"""Compare the lock behaviour of two recordings of one workload (``lktrace diff``).

Both sides go through the analysis (:class:`~lktrace.replay.analyze.Run`);
this module only matches what it found.  Locks match by name: classes by
class name, instances by lock name (``pci:0000:01:00.0``), and an anonymous
lock, named by an address that changes between boots, by its class.  Call
paths match by symbol without offsets, from the call site outward.

The unit compared is an *ordering*: an edge ``A -> B`` of the analysis graph
together with the call path that held ``A``.  An ordering missing from the
new trace counts as removed only if the new trace took ``A`` on that same
path (the code ran and no longer goes on to ``B``); otherwise it was not
exercised and says nothing.  Likewise an ordering counts as added only if
the old trace took ``A`` on that path; else it is new coverage.  Inversions
match as cycles of lock names; each edge of one lists its call paths and how
each fares, and a cycle gone from the new trace is fixed only if one of its
edges was removed that way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lktrace.replay.analyze import Options, Run
from lktrace.replay.changes import (
    NESTING_ERRORS,
    NESTING_KINDS,
    CallPath,
    CycleChange,
    CycleEdge,
    DepthChange,
    Diff,
    Nesting,
    OrderingChange,
    PathStatus,
    Timing,
)
from lktrace.replay.findings import Inversion, Witness
from lktrace.replay.graph import Graph
from lktrace.trace import Trace, frame_symbol

#: An ordering: (level, from lock, to lock, call path that held "from").
Key = tuple[str, str, str, CallPath]
#: A cycle: its level and its edges as (from lock, to lock).
CycleKey = tuple[str, frozenset[tuple[str, str]]]


def call_path(caller: str, stack: Sequence[str]) -> CallPath:
    """The symbols of ``stack`` from the call site outward; the call site alone without one."""
    site = frame_symbol(caller)
    syms = [frame_symbol(f) for f in stack]
    if site in syms:
        return tuple(syms[syms.index(site) :])
    return tuple(syms) or ((site,) if site else ())


@dataclass
class Ordering:
    """Where one ordering occurs in its side's graph."""

    graph: Graph
    pair: int  # the first occurrence, for the witness
    count: int
    listed: bool  # an edge diff reports: class edges, instance edges within one class


class Side:
    """One side of the diff, analysed and keyed by names and call paths."""

    def __init__(self, traces: Iterable[Trace], opts: Options, drop_tables: bool) -> None:
        self.run = run = Run(traces, opts, drop_tables)
        self.analysis = run.analysis()
        self.notes: list[str] = list(self.analysis.notes)
        ev = run.ev
        self._ids: dict[CallPath, int] = {}
        self.paths: list[CallPath] = []
        self.cls_key = [frame_symbol(c) for c in ev.classes]
        self.inst_cls = np.zeros(len(ev.inst_name), np.int64)
        self.inst_cls[ev.inst] = ev.cls
        self.inst_key = [
            self.lock_key("instance", ev.names[n], ev.classes[c])
            for n, c in zip(ev.inst_name.tolist(), self.inst_cls.tolist(), strict=True)
        ]
        self.hold_path = self.paths_at(run.rp.holds.origin)
        self.taken = self._taken()
        self.orderings = self._orderings()
        self.edge_paths: dict[tuple[str, str, str], list[CallPath]] = {}
        for key in self.orderings:
            self.edge_paths.setdefault(key[:3], []).append(key[3])
        self.cycles = {self.cycle_key(inv): inv for inv in self.analysis.inversions}
        self.guarded = {self.cycle_key(inv): inv for inv in self.analysis.guarded}
        self.nesting = {} if run.no_releases else self._nesting()

    def _intern(self, path: CallPath) -> int:
        pid = self._ids.get(path)
        if pid is None:
            pid = self._ids[path] = len(self.paths)
            self.paths.append(path)
        return pid

    def paths_at(self, pos: np.ndarray) -> np.ndarray:
        """Call-path ids of the events at ``pos``; a -1 position gets the empty path."""
        ev = self.run.ev
        out = np.full(len(pos), self._intern(()), np.int64)
        ok = np.flatnonzero(pos >= 0)
        p = pos[ok]
        where = pd.DataFrame({"f": ev.file[p], "c": ev.caller[p], "s": ev.stack[p]})
        codes = where.groupby(["f", "c", "s"], sort=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        ids = [
            self._intern(call_path(ev.callers[ev.caller[i]], ev.stack_frames(i)))
            for i in p[first].tolist()
        ]
        out[ok] = np.asarray(ids, np.int64)[codes] if ids else []
        return out

    def _taken(self) -> set[tuple[str, str, CallPath]]:
        """(level, lock, call path) of every acquisition in the trace."""
        h = self.run.rp.holds
        seen = pd.DataFrame({"c": h.cls, "i": h.inst, "p": self.hold_path}).drop_duplicates()
        out = set()
        for c, i, p in seen.itertuples(index=False):
            out.add(("class", self.cls_key[c], self.paths[p]))
            out.add(("instance", self.inst_key[i], self.paths[p]))
        return out

    def _orderings(self) -> dict[Key, Ordering]:
        """Every ordering of both graphs, by key."""
        run = self.run
        orderings: dict[Key, Ordering] = {}
        width = max(len(self.paths), 1)
        for graph in run.graphs.values():
            keys = np.asarray(self.cls_key if graph.level == "class" else self.inst_key, object)
            occ = graph.occurrences
            edge = np.repeat(np.arange(len(graph), dtype=np.int64), graph.count)
            combo = edge * width + self.hold_path[run.pairs.hold[occ]]
            uniq, first, count = np.unique(combo, return_index=True, return_counts=True)
            e, path = uniq // width, uniq % width
            src, dst = graph.src[e], graph.dst[e]
            listed = (
                np.ones(len(e), bool)
                if graph.level == "class"
                else self.inst_cls[src] == self.inst_cls[dst]
            )
            # two anonymous locks of one class have the same key: nothing to match them by
            keep = np.flatnonzero(keys[src] != keys[dst])
            for s, d, p, pair, n, shown in zip(
                keys[src[keep]].tolist(),
                keys[dst[keep]].tolist(),
                path[keep].tolist(),
                occ[first[keep]].tolist(),
                count[keep].tolist(),
                listed[keep].tolist(),
                strict=True,
            ):
                key = (graph.level, s, d, self.paths[p])
                if key in orderings:
                    orderings[key].count += n
                else:
                    orderings[key] = Ordering(graph, pair, n, shown)
        return orderings

    @staticmethod
    def lock_key(level: str, label: str, lock_class: str) -> str:
        """The name a lock matches by: its class, its name, or for an anonymous lock its class."""
        if level == "class" or label.startswith("0x"):
            return frame_symbol(lock_class)
        return label

    def cycle_key(self, inv: Inversion) -> CycleKey:
        edges = frozenset(
            (
                self.lock_key(inv.level, w.src, w.src_class),
                self.lock_key(inv.level, w.dst, w.dst_class),
            )
            for w in inv.edges
        )
        return inv.level, edges

    def witness(self, key: Key) -> Witness:
        """The first occurrence of an ordering."""
        o = self.orderings[key]
        return self.run.witness(o.graph, o.pair)

    def _nesting(self) -> dict[tuple[str, CallPath], tuple[Nesting, str]]:
        """Per (lock, call path) that nested: its worst nesting, and the lock's class."""
        run, ev = self.run, self.run.ev
        h, rp = run.rp.holds, run.rp
        nested = np.flatnonzero(h.depth >= 2)
        where = np.where(h.origin[nested] >= 0, h.origin[nested], h.start[nested])
        stuck = rp.pending[rp.depth_before[rp.pending] > 0]
        exceeded = h.depth[nested] > run.opts.max_depth
        reentrant, too_deep, stuck_kind = (
            NESTING_KINDS.index(k) for k in ("reentrant", "depth_exceeded", "self_deadlock")
        )
        kind = np.r_[np.where(exceeded, too_deep, reentrant), np.full(len(stuck), stuck_kind)]
        df = pd.DataFrame(
            {
                "inst": np.r_[h.inst[nested], ev.inst[stuck]],
                "path": np.r_[self.hold_path[nested], self.paths_at(stuck)],
                "kind": kind,
                "depth": np.r_[h.depth[nested], rp.depth_before[stuck] + 1],
                "pos": np.r_[where, stuck],
            }
        )
        worst = df.sort_values(["kind", "depth"], ascending=False).drop_duplicates(["inst", "path"])
        out = {}
        for inst, path, k, depth, pos in worst.itertuples(index=False):
            task = ev.tasks.iloc[ev.task[pos]]
            example = Nesting(
                NESTING_KINDS[k],
                int(depth),
                int(task.tid),
                str(task.comm),
                int(ev.ts[pos]),
                ev.stack_frames(int(pos)),
            )
            out[(self.inst_key[inst], self.paths[path])] = (
                example,
                self.cls_key[self.inst_cls[inst]],
            )
        return out

    def nesting_at(self, lock: str, path: CallPath) -> Nesting:
        """How ``path`` nested ``lock`` here: as found, ``none`` or ``unseen``."""
        found = self.nesting.get((lock, path))
        if found:
            return found[0]
        if ("instance", lock, path) in self.taken:
            return Nesting("none", 1)
        return Nesting("unseen", 0)

    def timing(self) -> pd.DataFrame:
        """Per lock class: acquisitions, wait and hold time median and p99 (ns)."""
        h = self.run.rp.holds
        # without release events every acquisition looks nested: take them all
        m = ~h.before_start & ((h.depth == 1) | bool(self.run.no_releases))
        codes, names = pd.factorize(np.asarray(self.cls_key, object))
        df = pd.DataFrame(
            {
                "lock_class": np.asarray(names, object)[codes[h.cls[m]]],
                "wait": (h.acquired_ts - h.attempt_ts)[m],
                "hold": np.where(h.released, h.released_ts - h.acquired_ts, np.nan)[m],
            }
        )
        by = df.groupby("lock_class")
        q = by[["wait", "hold"]].quantile([0.5, 0.99]).unstack()
        q.columns = [f"{what}_p{round(p * 100)}" for what, p in q.columns]
        q.insert(0, "count", by.size())
        return q


def diff(
    old: Iterable[Trace],
    new: Iterable[Trace],
    opts: Options | None = None,
    drop_tables: bool = False,
) -> Diff:
    """Compare ``old`` with ``new`` (each one trace, or several merged).

    ``drop_tables`` empties each trace's table once read, as in ``analyze``.
    """
    return compare(*sides(old, new, opts, drop_tables))


def sides(
    old: Iterable[Trace],
    new: Iterable[Trace],
    opts: Options | None = None,
    drop_tables: bool = False,
) -> tuple[Side, Side]:
    """Both sides analysed, for :func:`compare` (and for drawing them)."""
    opts = replace(opts or Options(), level="both")
    return Side(old, opts, drop_tables), Side(new, opts, drop_tables)


def compare(a: Side, b: Side) -> Diff:
    """What changed from side ``a`` (old) to side ``b`` (new)."""
    notes = [f"old: {n}" for n in a.notes] + [f"new: {n}" for n in b.notes]
    blind = a.run.no_releases + b.run.no_releases
    if blind:  # held sets, hence orders and nesting, are unknown on that side
        notes.append(f"no release events in {', '.join(blind)}: only wait times are compared")
        return Diff("same", a.analysis.traces, b.analysis.traces, notes, timing=_timing(a, b))
    added = [_ordering(b, a, k) for k in _only(b, a)]
    gone = [_ordering(a, b, k) for k in _only(a, b)]

    fixed, unexercised, remaining, introduced = [], [], [], []
    for key, inv in a.cycles.items():
        if key not in b.cycles:
            change = _cycle(a, b, key, inv)
            (fixed if change.exercised else unexercised).append(change)
    for key, inv in b.cycles.items():
        (remaining if key in a.cycles else introduced).append(_cycle(a, b, key, inv))

    depth = []
    for lock, path in sorted(a.nesting.keys() | b.nesting.keys()):
        was, now = a.nesting_at(lock, path), b.nesting_at(lock, path)
        how = _nesting_change(was, now)
        if how:
            cls = (a.nesting.get((lock, path)) or b.nesting[(lock, path)])[1]
            depth.append(DepthChange(cls, lock, path, was, now, how))

    worse = introduced or any(d.change == "worse" for d in depth)
    better = fixed or any(d.change == "better" for d in depth)
    return Diff(
        verdict="worse" if worse else "better" if better else "same",
        old=a.analysis.traces,
        new=b.analysis.traces,
        notes=notes,
        edges_added=[c for c in added if c.exercised and not c.edge_in_both],
        edges_removed=[c for c in gone if c.exercised and not c.edge_in_both],
        paths_added=[c for c in added if c.exercised and c.edge_in_both],
        paths_removed=[c for c in gone if c.exercised and c.edge_in_both],
        not_exercised=[c for c in gone if not c.exercised],
        new_coverage=[c for c in added if not c.exercised],
        inversions_fixed=_sorted(fixed),
        inversions_introduced=_sorted(introduced),
        inversions_remaining=_sorted(remaining),
        inversions_not_exercised=_sorted(unexercised),
        depth_changes=depth,
        timing=_timing(a, b),
    )


def _ran(side: Side, key: Key) -> bool:
    """Whether ``side`` took the ordering's first lock on its call path."""
    return (key[0], key[1], key[3]) in side.taken


def _only(side: Side, other: Side) -> list[Key]:
    """The listed orderings of ``side`` that ``other`` lacks, sorted."""
    return sorted(
        k for k in side.orderings.keys() - other.orderings.keys() if side.orderings[k].listed
    )


def _ordering(side: Side, other: Side, key: Key) -> OrderingChange:
    level, src, dst, path = key
    return OrderingChange(
        level,
        src,
        dst,
        path,
        side.orderings[key].count,
        key[:3] in other.edge_paths,
        _ran(other, key),
        side.witness(key),
    )


def _status(a: Side, b: Side, key: Key) -> str:
    """How an ordering of either side fares in the new trace."""
    if key in a.orderings:
        return "kept" if key in b.orderings else "removed" if _ran(b, key) else "not_exercised"
    return "added"


def _cycle(a: Side, b: Side, key: CycleKey, inv: Inversion) -> CycleChange:
    """Compare one cycle, found as ``inv`` in one of the sides, edge by edge."""
    level = key[0]
    edges = []
    exercised = True  # for a new cycle: the old trace ran a call path of every new edge
    for w in inv.edges:
        edge = (
            level,
            Side.lock_key(level, w.src, w.src_class),
            Side.lock_key(level, w.dst, w.dst_class),
        )
        was, now = a.edge_paths.get(edge, []), b.edge_paths.get(edge, [])
        paths = [PathStatus(p, _status(a, b, (*edge, p))) for p in sorted({*was, *now})]
        if was and now:
            status = "kept"
        elif now:
            status = "added"
            exercised = exercised and any(_ran(a, (*edge, p)) for p in now)
        else:
            status = "removed" if any(p.status == "removed" for p in paths) else "not_exercised"
        edges.append(CycleEdge(edge[1], edge[2], status, paths, w))
    gate = b.guarded[key].gate if key in b.guarded and key not in b.cycles else None
    if key not in b.cycles:  # gone: fixed if an edge went for real, or a gate now guards it
        exercised = gate is not None or any(e.status == "removed" for e in edges)
    return CycleChange(
        level,
        [e.src for e in edges],
        edges,
        deadlocked_old=key in a.cycles and a.cycles[key].deadlocked,
        deadlocked_new=key in b.cycles and b.cycles[key].deadlocked,
        exercised=exercised,
        gate=gate,
    )


def _sorted(changes: list[CycleChange]) -> list[CycleChange]:
    return sorted(changes, key=lambda c: (c.level, len(c.cycle), c.cycle))


def _nesting_change(old: Nesting, new: Nesting) -> str | None:
    """How a call path's nesting of a lock moved, or None when it did not."""
    if (old.kind, old.depth) == (new.kind, new.depth):
        return None
    if new.kind == "unseen":
        return "not_exercised"
    was, now = (max(NESTING_KINDS.index(n.kind), 1) for n in (old, new))  # unseen as none
    if now > was and new.kind in NESTING_ERRORS:
        return "worse"
    if was > now and old.kind in NESTING_ERRORS:
        return "better"
    return "changed"


def _timing(a: Side, b: Side) -> list[Timing]:
    """Wait and hold quantiles of the classes both sides acquired."""
    both = a.timing().merge(
        b.timing(), left_index=True, right_index=True, suffixes=(":old", ":new")
    )
    out = []
    for cls, row in both.iterrows():
        side = {
            s: {
                col: None if pd.isna(row[f"{col}:{s}"]) else int(row[f"{col}:{s}"])
                for col in ("count", "wait_p50", "wait_p99", "hold_p50", "hold_p99")
            }
            for s in ("old", "new")
        }
        out.append(Timing(str(cls), side["old"], side["new"]))
    return out
