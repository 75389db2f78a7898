"""One side of ``lktrace diff``: an analysed replay state keyed by names and call paths.

Locks match by name: classes by class name, instances by lock name, and an
anonymous lock by its class (:func:`~lktrace.replay.identity.lock_key`).  The
unit compared is an *ordering*: an edge ``A -> B`` together with the call
path that held ``A``.  A :class:`Side` lists its orderings, the locks it
took on each call path, how each call path nested each lock, and the wait
and hold times of each class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.changes import NESTING_KINDS, Nesting
from lktrace.replay.findings import Witness
from lktrace.replay.histogram import class_times
from lktrace.replay.identity import cycle_identity, lock_key
from lktrace.replay.paths import CallPath
from lktrace.replay.state import ReplayState
from lktrace.trace import frame_symbol

#: An ordering: (level, from lock, to lock, call path that held "from").
Key = tuple[str, str, str, CallPath]
#: The columns that key the ``orderings`` table; ``path`` holds :func:`path_key`.
INDEX = ["level", "src", "dst", "path"]


def path_key(path: CallPath) -> str:
    """A call path as one string, for tables (symbols hold no newline)."""
    return "\n".join(path)


class Side:
    """One side of the diff, analysed and keyed by names and call paths.

    ``orderings`` is a table indexed by (level, from lock, to lock, call path
    key), with each ordering's ``count``, first ordering ``pair`` (the
    witness) and whether diff lists it (``listed``: class edges, instance
    edges within one class).  It is built and matched with pandas, so a
    trace's million orderings cost no Python each; only the orderings that
    differ between the sides become objects.
    """

    def __init__(self, state: ReplayState, opts: Options) -> None:
        self.state = state
        self.opts = opts
        self.analysis = analysis(state, opts)
        self.notes: list[str] = list(self.analysis.notes)
        ev = state.events
        self.paths = state.paths
        self.cls_key = [frame_symbol(c) for c in ev.classes]
        self.inst_cls = state.inst_classes()
        self.inst_key = [
            lock_key("instance", ev.names[n], ev.classes[c])
            for n, c in zip(ev.inst_name.tolist(), self.inst_cls.tolist(), strict=True)
        ]
        self.hold_path = state.hold_paths
        self.taken = self._taken()
        self.orderings = self._orderings()
        # sorted, with sorted levels: an edge's paths are one slice
        self._by_edge = self.orderings.reset_index().sort_values(INDEX).set_index(INDEX)
        self.cycles = {cycle_identity(inv): inv for inv in self.analysis.inversions}
        self.guarded = {cycle_identity(inv): inv for inv in self.analysis.guarded}
        self.nesting = {} if state.no_releases else self._nesting()

    def _taken(self) -> set[tuple[str, str, CallPath]]:
        """(level, lock, call path) of every acquisition in the trace."""
        out = set()
        for c, i, p in self.state.taken().tolist():
            out.add(("class", self.cls_key[c], self.paths[p]))
            out.add(("instance", self.inst_key[i], self.paths[p]))
        return out

    def _orderings(self) -> pd.DataFrame:
        """Every ordering of both graphs, keyed by names and call path (see the class)."""
        state = self.state
        self._path_of = {path_key(p): p for p in self.paths.paths}
        keys_of_path = np.array(list(self._path_of), object)
        frames = []
        for graph in state.graphs.values():
            keys = np.asarray(self.cls_key if graph.level == "class" else self.inst_key, object)
            e, path, first, count = state.ordering_paths(graph)
            src, dst = graph.src[e], graph.dst[e]
            listed = (
                np.ones(len(e), bool)
                if graph.level == "class"
                else self.inst_cls[src] == self.inst_cls[dst]
            )
            # two anonymous locks of one class have the same key: nothing to match them by
            keep = np.flatnonzero(keys[src] != keys[dst])
            frames.append(
                pd.DataFrame(
                    {
                        "level": graph.level,
                        "src": keys[src[keep]],
                        "dst": keys[dst[keep]],
                        "path": keys_of_path[path[keep]],
                        "pair": first[keep],
                        "count": count[keep],
                        "listed": listed[keep],
                    }
                )
            )
        # locks that share a key (instances of a class on two boots) add up
        by = pd.concat(frames, ignore_index=True).groupby(INDEX, sort=False)
        return by.agg(pair=("pair", "first"), count=("count", "sum"), listed=("listed", "first"))

    def has(self, key: Key) -> bool:
        return (*key[:3], path_key(key[3])) in self.orderings.index

    def row(self, key: Key) -> pd.Series:
        return self.orderings.loc[(*key[:3], path_key(key[3]))]

    def paths_of(self, edge: tuple[str, str, str]) -> list[CallPath]:
        """The call paths this side took an edge ``(level, from, to)`` on."""
        try:
            found = self._by_edge.loc[edge]
        except KeyError:
            return []
        return [self._path_of[k] for k in found.index]

    def only(self, other: Side) -> list[Key]:
        """The listed orderings of this side that ``other`` lacks, sorted."""
        mine = self.orderings[self.orderings["listed"].to_numpy()]
        missing = mine.index[~mine.index.isin(other.orderings.index)]
        return sorted((lv, s, d, self._path_of[p]) for lv, s, d, p in missing)

    def witness(self, key: Key) -> Witness:
        """The first occurrence of an ordering."""
        return self.state.witness(key[0], int(self.row(key)["pair"]))

    def _nesting(self) -> dict[tuple[str, CallPath], tuple[Nesting, str]]:
        """Per (lock, call path) that nested: its worst nesting, and the lock's class."""
        ev, h, rp = self.state.events, self.state.holds, self.state.replay
        nested = np.flatnonzero(h.depth >= 2)
        where = np.where(h.origin[nested] >= 0, h.origin[nested], h.start[nested])
        stuck = rp.pending[rp.depth_before[rp.pending] > 0]
        exceeded = h.depth[nested] > self.opts.max_depth
        reentrant, too_deep, stuck_kind = (
            NESTING_KINDS.index(k) for k in ("reentrant", "depth_exceeded", "self_deadlock")
        )
        kind = np.r_[np.where(exceeded, too_deep, reentrant), np.full(len(stuck), stuck_kind)]
        df = pd.DataFrame(
            {
                "inst": np.r_[h.inst[nested], ev.inst[stuck]],
                "path": np.r_[self.hold_path[nested], self.paths.at(stuck)],
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
        """How ``path`` nested ``lock`` here: as found, ``none`` or ``unseen``.

        ``path`` ran without nesting when the lock was taken on it, or on one of
        its outer parts (a nested attempt's path runs through the outer hold's
        call site): a kernel whose inner call no longer takes the lock (the
        rescan lock out of sriov_disable, 05703271c3cd's revert 2fa119c0e5e5)
        still ran the code and took the lock once.
        """
        found = self.nesting.get((lock, path))
        if found:
            return found[0]
        if any(("instance", lock, path[i:]) in self.taken for i in range(len(path))):
            return Nesting("none", 1)
        return Nesting("unseen", 0)

    def timing(self) -> pd.DataFrame:
        """Per lock class: acquisitions, wait and hold time median and p99 (ns)."""
        return class_times(self.state.timing(), self.cls_key)
