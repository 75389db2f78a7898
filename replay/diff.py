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
exercised and says nothing.  An inversion is a cycle on one call path per
edge, so a cycle that stays in the class graph but loses the path that made
it (``remove_store`` reordered) is fixed while another (hotplug) remains.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
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
    Timing,
)
from lktrace.replay.findings import Inversion
from lktrace.replay.graph import Graph
from lktrace.trace import Trace

#: Call-path combinations compared per cycle; a cycle with more lists the first ones.
MAX_COMBOS = 64

_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?")

#: An ordering: (level, from lock, to lock, call path that held "from").
Key = tuple[str, str, str, CallPath]


def symbol(frame: str) -> str:
    """A frame without its offset: ``remove_store+0x1c/0x90`` -> ``remove_store``."""
    return _OFFSET.sub("", frame).strip()


def call_path(caller: str, stack: Sequence[str]) -> CallPath:
    """The symbols of ``stack`` from the call site outward; the call site alone without one."""
    site = symbol(caller)
    syms = [symbol(f) for f in stack]
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

    def __init__(self, traces: list[Trace], opts: Options) -> None:
        self.run = run = Run(traces, opts)
        self.analysis = run.analysis()
        self.notes: list[str] = list(self.analysis.notes)
        ev = run.ev
        self._ids: dict[CallPath, int] = {}
        self.paths: list[CallPath] = []
        self.cls_key = [symbol(c) for c in ev.classes]
        self.inst_cls = np.zeros(len(ev.inst_name), np.int64)
        self.inst_cls[ev.inst] = ev.cls
        self.inst_key = [
            self.cls_key[c] if ev.names[n].startswith("0x") else ev.names[n]
            for n, c in zip(ev.inst_name.tolist(), self.inst_cls.tolist(), strict=True)
        ]
        self.hold_path = self.paths_at(run.rp.holds.origin)
        self.taken = self._taken()
        self.orderings, self.edge_paths = self._orderings()
        self.edges = {k[:3] for k in self.orderings}
        self.cycles = self._cycles()
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

    def _orderings(self) -> tuple[dict[Key, Ordering], dict[tuple[str, int], list[Key]]]:
        """Every ordering by key, and the orderings of each graph edge."""
        run = self.run
        orderings: dict[Key, Ordering] = {}
        edge_paths: dict[tuple[str, int], list[Key]] = {}
        for graph in run.graphs.values():
            keys = self.cls_key if graph.level == "class" else self.inst_key
            occ = graph.occurrences
            df = pd.DataFrame(
                {
                    "edge": np.repeat(np.arange(len(graph)), graph.count),
                    "path": self.hold_path[run.pairs.hold[occ]],
                    "pair": occ,
                }
            )
            by_path = df.groupby(["edge", "path"], sort=False)["pair"].agg(["first", "size"])
            for (e, p), pair, count in zip(
                by_path.index, by_path["first"], by_path["size"], strict=True
            ):
                s, d = int(graph.src[e]), int(graph.dst[e])
                if keys[s] == keys[d]:
                    continue  # two anonymous locks of one class: nothing to match them by
                key = (graph.level, keys[s], keys[d], self.paths[p])
                edge_paths.setdefault((graph.level, int(e)), []).append(key)
                if key in orderings:
                    orderings[key].count += int(count)
                    continue
                listed = graph.level == "class" or self.inst_cls[s] == self.inst_cls[d]
                orderings[key] = Ordering(graph, int(pair), int(count), listed)
        return orderings, edge_paths

    def _cycles(self) -> dict[frozenset[Key], tuple[Inversion, list[Key]]]:
        """Each inversion of the analysis on each combination of its edges' call paths."""
        out: dict[frozenset[Key], tuple[Inversion, list[Key]]] = {}
        lookup: dict[str, tuple[dict[str, int], dict[tuple[int, int], int]]] = {}
        for inv in self.analysis.inversions:
            graph = self.run.graphs[inv.level]
            if inv.level not in lookup:
                lookup[inv.level] = ({lb: i for i, lb in enumerate(graph.labels)}, graph.index())
            node, index = lookup[inv.level]
            nodes = [node[c] for c in inv.cycle]
            edges = [index[pair] for pair in zip(nodes, nodes[1:] + nodes[:1], strict=True)]
            choices = [self.edge_paths.get((inv.level, e), []) for e in edges]
            combos = list(itertools.islice(itertools.product(*choices), MAX_COMBOS + 1))
            if len(combos) > MAX_COMBOS:
                self.notes.append(
                    f"{' -> '.join(inv.cycle)}: compared the first {MAX_COMBOS} "
                    "combinations of call paths only"
                )
            for combo in combos[:MAX_COMBOS]:
                out.setdefault(frozenset(combo), (inv, list(combo)))
        return out

    def _nesting(self) -> dict[tuple[str, CallPath], tuple[Nesting, str]]:
        """Per (lock, call path) that nested: its worst nesting, and the lock's class."""
        run, ev = self.run, self.run.ev
        h, rp = run.rp.holds, run.rp
        nested = np.flatnonzero(h.depth >= 2)
        where = np.where(h.origin[nested] >= 0, h.origin[nested], h.start[nested])
        stuck = rp.pending[rp.depth_before[rp.pending] > 0]
        exceeded = h.depth[nested] > run.opts.max_depth
        kind = np.r_[np.where(exceeded, 3, 2), np.full(len(stuck), 4)]  # NESTING_KINDS index
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


def diff(old: Sequence[Trace], new: Sequence[Trace], opts: Options | None = None) -> Diff:
    """Compare ``old`` with ``new`` (each one trace, or several merged)."""
    opts = replace(opts or Options(), level="both")
    a, b = Side(list(old), opts), Side(list(new), opts)

    def changed(side: Side, other: Side, key: Key) -> OrderingChange:
        o = side.orderings[key]
        level, src, dst, path = key
        return OrderingChange(
            level,
            src,
            dst,
            path,
            o.count,
            key[:3] in other.edges,
            (level, src, path) in other.taken,
            side.run.witness(o.graph, o.pair),
        )

    added = [changed(b, a, k) for k in sorted(b.orderings) if _only(k, b, a)]
    gone = [changed(a, b, k) for k in sorted(a.orderings) if _only(k, a, b)]

    fixed, unexercised, remaining, introduced = [], [], [], []
    for combo in a.cycles:
        if combo not in b.cycles:
            change = _cycle(a, b, combo, "removed")
            (fixed if change.exercised else unexercised).append(change)
    for combo in b.cycles:
        (remaining if combo in a.cycles else introduced).append(_cycle(b, a, combo, "added"))

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
        notes=[f"old: {n}" for n in a.notes] + [f"new: {n}" for n in b.notes],
        edges_added=added,
        edges_removed=[c for c in gone if c.exercised],
        not_exercised=[c for c in gone if not c.exercised],
        inversions_fixed=_sorted(fixed),
        inversions_introduced=_sorted(introduced),
        inversions_remaining=_sorted(remaining),
        inversions_not_exercised=_sorted(unexercised),
        depth_changes=depth,
        timing=_timing(a, b),
    )


def _only(key: Key, side: Side, other: Side) -> bool:
    return side.orderings[key].listed and key not in other.orderings


def _cycle(side: Side, other: Side, combo: frozenset[Key], missing: str) -> CycleChange:
    """The change of one cycle combination of ``side``; ``missing`` names an edge other lacks."""
    inv, keys = side.cycles[combo]
    edges, ran = [], []
    for key in keys:
        status = "kept"
        if key not in other.orderings:
            ran.append((key[0], key[1], key[3]) in other.taken)
            status = missing if ran[-1] or missing == "added" else "not_exercised"
        o = side.orderings[key]
        edges.append(CycleEdge(key[1], key[2], key[3], status, side.run.witness(o.graph, o.pair)))
    # gone for real once one edge is; new for real only if the old trace ran every new edge's path
    exercised = any(ran) if missing == "removed" else all(ran)
    # the deadlock (if any) is this combination when its witnesses took these paths
    deadlocked = inv.deadlocked and all(
        call_path(w.held_caller, w.held_stack) == key[3]
        for w, key in zip(inv.edges, keys, strict=True)
    )
    return CycleChange(inv.level, [k[1] for k in keys], edges, deadlocked, exercised)


def _sorted(changes: list[CycleChange]) -> list[CycleChange]:
    def order(c: CycleChange) -> tuple:
        return c.level, len(c.cycle), c.cycle, [e.path for e in c.edges]

    return sorted(changes, key=order)


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
    both = a.timing().join(b.timing(), how="inner", lsuffix=":old", rsuffix=":new")
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
