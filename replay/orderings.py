"""A diff side's orderings at one graph level, as integer-keyed arrays, and the lazy lists of
the orderings that changed.

An ordering is an edge (from lock, to lock) with the call path that held
"from"; here it is the edge's lock codes packed into one int64 and the call
path's code (:mod:`~lktrace.replay.keys`).  Rows are sorted by (edge, path),
so an edge's paths are one slice, and each listed row keeps its first
witness as columns (:class:`~lktrace.replay.witnesses.Witnesses`).  Only the
orderings a diff lists become Python objects, one at a time as they are read
(:class:`OrderingChanges`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import numpy as np

from lktrace.replay.arrays import run_starts, sort_rows
from lktrace.replay.changes import OrderingChange
from lktrace.replay.graph import Graph
from lktrace.replay.keys import pack, rows_in, unpack
from lktrace.replay.state import ReplayState
from lktrace.replay.witnesses import Witnesses

if TYPE_CHECKING:
    from lktrace.replay.side import Side


@dataclass
class Orderings:
    """One level's orderings of one side, sorted by (edge, call path) codes."""

    level: str
    edge: np.ndarray  # pack(from lock, to lock)
    path: np.ndarray  # call path code
    count: np.ndarray
    listed: np.ndarray  # bool: diff lists it (class edges; instance edges within one class)
    witnesses: Witnesses  # the first witness of each listed row, in row order

    @classmethod
    def build(
        cls,
        state: ReplayState,
        graph: Graph,
        rows: tuple[np.ndarray, ...],
        lock: np.ndarray,
        path: np.ndarray,
        node_class: np.ndarray | None,
    ) -> Orderings:
        """The orderings of ``graph`` from its ``rows`` (``state.ordering_paths``), its
        nodes and the state's call paths as codes (``lock``, ``path``).  With
        ``node_class`` (each node's class) only the edges within one class are
        listed, else all.

        Locks that share a key (an anonymous lock on two boots) add up; an
        ordering's witness is that of its first edge.  Two locks with the same
        key have nothing to match them by: their edges are left out.
        """
        e, p, first, count = rows
        src, dst = lock[graph.src[e]], lock[graph.dst[e]]
        keep = np.flatnonzero(src != dst)
        edge, pcode = pack(src[keep], dst[keep]), path[p[keep]]
        order = sort_rows(edge, pcode)  # stable: a key's first row stays first
        starts = run_starts(edge[order], pcode[order])
        at = order[starts]  # each key's first row
        e = e[keep[at]]
        on = (
            np.ones(len(at), bool)
            if node_class is None
            else node_class[graph.src[e]] == node_class[graph.dst[e]]
        )
        return cls(
            level=graph.level,
            edge=edge[at],
            path=pcode[at],
            count=np.add.reduceat(count[keep][order], starts) if len(at) else count[:0],
            listed=on,
            witnesses=Witnesses(state, graph.level, first[keep[at[on]]]),
        )

    def of_edge(self, edge: int) -> slice:
        """The rows of one edge."""
        return slice(*np.searchsorted(self.edge, [edge, edge + 1]))

    def find(self, edge: int, path: int) -> int:
        """The row of an ordering, or -1."""
        at = self.of_edge(edge)
        hit = np.flatnonzero(self.path[at] == path)
        return at.start + int(hit[0]) if len(hit) else -1

    def missing_from(self, other: Orderings) -> np.ndarray:
        """The listed rows whose ordering ``other`` lacks."""
        rows = np.flatnonzero(self.listed)
        return rows[~rows_in((self.edge[rows], self.path[rows]), (other.edge, other.path))]

    def witness_rows(self, rows: np.ndarray) -> np.ndarray:
        """Where listed ``rows`` are in :attr:`witnesses`."""
        return np.cumsum(self.listed)[rows] - 1


def taken_codes(lock: np.ndarray, path: np.ndarray) -> np.ndarray:
    """The (lock, call path) codes of acquisitions, packed, sorted and distinct."""
    return np.unique(pack(lock, path))


#: Entries made into objects at a time when iterating.
CHUNK = 4096
#: The columns of :class:`OrderingChanges`, one value per entry.
ENTRY = ("level", "row", "witness", "edge_in_both", "exercised")


class OrderingChanges(Sequence[OrderingChange]):
    """Orderings of one side as a diff lists them.  Per entry: its level (an index into
    ``side.levels``), its row there and its witness's, whether the edge is in both traces
    and whether the other trace ran the call path.  Each entry becomes an
    :class:`OrderingChange` when read."""

    def __init__(self, side: Side, **cols: np.ndarray) -> None:
        self.side = side
        self.cols = {c: cols[c] for c in ENTRY}

    def __len__(self) -> int:
        return len(self.cols["row"])

    @overload
    def __getitem__(self, i: int) -> OrderingChange: ...
    @overload
    def __getitem__(self, i: slice) -> OrderingChanges: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.where(np.arange(len(self))[i])
        return self._make(np.array([range(len(self))[i]]))[0]

    def __iter__(self) -> Iterator[OrderingChange]:
        for start in range(0, len(self), CHUNK):
            yield from self._make(np.arange(start, min(start + CHUNK, len(self))))

    def _make(self, pick: np.ndarray) -> list[OrderingChange]:
        """The entries at positions ``pick``, as objects."""
        side = self.side
        locks, paths = side.vocabs.locks.values, side.vocabs.paths.values
        c = {k: v[pick] for k, v in self.cols.items()}
        out: list[OrderingChange] = [None] * len(pick)  # type: ignore[list-item]
        for code in np.unique(c["level"]).tolist():
            level = side.levels[code]
            at = np.flatnonzero(c["level"] == code)
            o, rows = side.orderings[level], c["row"][at]
            src, dst = unpack(o.edge[rows])
            for k, s, d, p, n, both, ran, w in zip(
                at.tolist(),
                src.tolist(),
                dst.tolist(),
                o.path[rows].tolist(),
                o.count[rows].tolist(),
                c["edge_in_both"][at].tolist(),
                c["exercised"][at].tolist(),
                o.witnesses.take(c["witness"][at]),
                strict=True,
            ):
                out[k] = OrderingChange(level, locks[s], locks[d], paths[p], n, both, ran, w)
        return out

    def where(self, pick: np.ndarray) -> OrderingChanges:
        """The entries ``pick`` (a mask or positions), in that order."""
        return OrderingChanges(self.side, **{k: v[pick] for k, v in self.cols.items()})
