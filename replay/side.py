"""One side of ``lktrace diff``: an analysed replay state keyed by lock keys and call paths.

Locks match by name: classes by class name, instances by lock name, and an
anonymous lock by its class (:func:`~lktrace.replay.identity.lock_key`).  The
unit compared is an *ordering*: an edge ``A -> B`` together with the call
path that held ``A``.  A :class:`Side` lists its orderings, the locks it
took on each call path, how each call path nested each lock, and the wait
and hold times of each class.  Lock keys and call paths are codes in
vocabularies both sides share (:mod:`~lktrace.replay.keys`), so a side's
tables are integer arrays (:class:`~lktrace.replay.orderings.Orderings`) and
the replay state they came from can go before the other side is built.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.changes import NESTING_KINDS, Nesting
from lktrace.replay.histogram import class_times
from lktrace.replay.identity import cycle_identity, lock_key
from lktrace.replay.keys import Vocabs, member, pack
from lktrace.replay.orderings import Orderings, taken_codes
from lktrace.replay.paths import CallPath
from lktrace.replay.state import ReplayState
from lktrace.trace import frame_symbol

#: An ordering: (level, from lock, to lock, call path that held "from").
Key = tuple[str, str, str, CallPath]


class Side:
    """One side of the diff, analysed and keyed by codes (see the module docstring).

    ``orderings`` holds each graph level's orderings, ``taken`` each level's
    (lock, call path) codes of every acquisition.  ``state`` is kept only
    when asked for (``keep_state``: the HTML page draws from it).
    """

    def __init__(
        self,
        state: ReplayState,
        opts: Options,
        vocabs: Vocabs | None = None,
        keep_state: bool = False,
    ) -> None:
        self.opts = opts
        self.vocabs = vocabs = vocabs or Vocabs()
        self.analysis = analysis(state, opts)
        self.notes: list[str] = list(self.analysis.notes)
        self.no_releases = state.no_releases
        self.cycles = {cycle_identity(inv): inv for inv in self.analysis.inversions}
        self.guarded = {cycle_identity(inv): inv for inv in self.analysis.guarded}
        ev = state.events
        cls_key = [frame_symbol(c) for c in ev.classes]
        inst_cls = state.inst_classes()
        inst_key = [
            lock_key("instance", ev.names[n], ev.classes[c])
            for n, c in zip(ev.inst_name.tolist(), inst_cls.tolist(), strict=True)
        ]
        keys = cls_key, inst_key, inst_cls
        self.nesting = {} if state.no_releases else _nesting(state, opts, *keys)
        self._timing = class_times(state.timing(), cls_key)
        lock = {"class": vocabs.locks.codes(cls_key), "instance": vocabs.locks.codes(inst_key)}
        taken, graphs = state.taken(), state.graphs
        rows = {lv: state.ordering_paths(g) for lv, g in graphs.items()}
        path = vocabs.paths.codes(state.paths.paths)  # every call path is interned by now
        self.taken = {
            "class": taken_codes(lock["class"][taken[:, 0]], path[taken[:, 2]]),
            "instance": taken_codes(lock["instance"][taken[:, 1]], path[taken[:, 2]]),
        }
        self.orderings = {
            lv: Orderings.build(
                state, g, rows[lv], lock[lv], path, None if lv == "class" else inst_cls
            )
            for lv, g in graphs.items()
        }
        self.levels = tuple(sorted(self.orderings))  # "class" sorts first, as in the listings
        self.state = state if keep_state else None

    def _codes(self, level: str, src: str, dst: str) -> tuple[Orderings | None, int]:
        """The level's orderings and an edge's code in them (None, -1 when unknown)."""
        locks = self.vocabs.locks
        s, d = locks.code(src), locks.code(dst)
        found = self.orderings.get(level)
        return (found, int(pack(s, d))) if found and s >= 0 and d >= 0 else (None, -1)

    def has(self, key: Key) -> bool:
        """Whether this side took the ordering ``key``."""
        found, edge = self._codes(*key[:3])
        p = self.vocabs.paths.code(key[3])
        return found is not None and p >= 0 and found.find(edge, p) >= 0

    def paths_of(self, edge: tuple[str, str, str]) -> list[CallPath]:
        """The call paths this side took an edge ``(level, from, to)`` on."""
        found, code = self._codes(*edge)
        if found is None:
            return []
        return [self.vocabs.paths.values[p] for p in found.path[found.of_edge(code)].tolist()]

    def ran(self, level: str, lock: str, path: CallPath) -> bool:
        """Whether this side took ``lock`` on call path ``path``."""
        lk, p = self.vocabs.locks.code(lock), self.vocabs.paths.code(path)
        return lk >= 0 and p >= 0 and bool(member(pack([lk], [p]), self.taken[level])[0])

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
        if any(self.ran("instance", lock, path[i:]) for i in range(len(path))):
            return Nesting("none", 1)
        return Nesting("unseen", 0)

    def timing(self) -> pd.DataFrame:
        """Per lock class: acquisitions, wait and hold time median and p99 (ns)."""
        return self._timing


def _nesting(
    state: ReplayState,
    opts: Options,
    cls_key: list[str],
    inst_key: list[str],
    inst_cls: np.ndarray,
) -> dict[tuple[str, CallPath], tuple[Nesting, str]]:
    """Per (lock, call path) that nested: its worst nesting, and the lock's class."""
    ev, h, rp = state.events, state.holds, state.replay
    nested = np.flatnonzero(h.depth >= 2)
    where = np.where(h.origin[nested] >= 0, h.origin[nested], h.start[nested])
    stuck = rp.pending[rp.depth_before[rp.pending] > 0]
    exceeded = h.depth[nested] > opts.max_depth
    reentrant, too_deep, stuck_kind = (
        NESTING_KINDS.index(k) for k in ("reentrant", "depth_exceeded", "self_deadlock")
    )
    kind = np.r_[np.where(exceeded, too_deep, reentrant), np.full(len(stuck), stuck_kind)]
    df = pd.DataFrame(
        {
            "inst": np.r_[h.inst[nested], ev.inst[stuck]],
            "path": np.r_[state.hold_paths[nested], state.paths.at(stuck)],
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
        out[(inst_key[inst], state.paths[path])] = (example, cls_key[inst_cls[inst]])
    return out
