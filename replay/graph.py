"""The lock-ordering graph: which lock a task waited for while holding which.

An ordering pair is one blocking attempt on lock B made while the same task
held lock A (A != B): the edge A -> B.  Pairs come from an interval stabbing
join (hold intervals against the sorted attempt positions of each task), so
the work is linear in events plus pairs.  Edges are kept at two levels:

- ``class``: lock classes, lockdep's view, which predicts deadlocks between
  code paths that met different instances.  Edges inside one class (a device
  lock taken under another device lock) are judged on instances only.
- ``instance``: the locks themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lktrace.replay.arrays import sort_rows
from lktrace.replay.events import Events
from lktrace.replay.holds import Holds


@dataclass
class Pairs:
    """Ordering pairs: ``hold`` (index into Holds) was held at event ``attempt``."""

    hold: np.ndarray
    attempt: np.ndarray


def ordering_pairs(ev: Events, holds: Holds, depth_before: np.ndarray) -> Pairs:
    """Every (held lock, blocking attempt) pair of the same task, other locks only.

    An attempt on a lock the task already holds (``depth_before`` > 0) pairs
    with nothing: it is reentrancy, not ordering, even with other locks taken
    in between.
    """
    is_attempt = ev.blocking & (depth_before == 0)
    attempts = np.flatnonzero(is_attempt)
    # before[k]: how many attempts come before position k (a searchsorted without the search)
    before = np.zeros(len(is_attempt) + 1, np.int64)
    np.cumsum(is_attempt, out=before[1:])
    del is_attempt
    hold, at = expand_ranges(before[holds.start + 1], before[holds.end])
    del before
    attempt = attempts[at]
    keep = ev.inst[attempt] != holds.inst[hold]
    return Pairs(hold[keep], attempt[keep])


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with ``lo[i] <= j < hi[i]``, without a Python loop."""
    count = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(count)), count)
    within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return owner, np.repeat(lo, count) + within


@dataclass
class Graph:
    """Edges at one level, each with all its occurrences sorted by time."""

    level: str
    labels: list[str]  # node labels
    src: np.ndarray  # per edge
    dst: np.ndarray
    occurrences: np.ndarray  # pair indices grouped by edge, in time order
    first: np.ndarray  # per edge: where its occurrences start
    count: np.ndarray  # per edge: how many
    #: per edge, how many occurrences ``occurrences`` holds, when not all of them
    #: (a state built from a summary keeps the witnesses only)
    stored: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.src)

    def find(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The index of each edge ``src[i] -> dst[i]``, -1 where the graph lacks it."""
        width = max(len(self.labels), 1)
        keys = self.src * width + self.dst  # sorted: edges are built in key order
        want = np.asarray(src, np.int64) * width + np.asarray(dst, np.int64)
        if not len(keys):
            return np.full(len(want), -1, np.int64)
        at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.where(keys[at] == want, at, -1)

    @property
    def first_pairs(self) -> np.ndarray:
        """Per edge, its first occurrence (an ordering pair): the edge's first witness."""
        return self.occurrences[self.first]

    def edge_occurrences(self, edge: int) -> np.ndarray:
        """Ordering pairs of ``edge``, earliest first."""
        n = self.count if self.stored is None else self.stored
        return self.occurrences[self.first[edge] : self.first[edge] + n[edge]]


def build_graph(ev: Events, holds: Holds, pairs: Pairs, level: str) -> Graph:
    """Aggregate ``pairs`` into the edges of the ``class`` or ``instance`` graph."""
    if level == "class":
        src, dst = holds.cls[pairs.hold], ev.cls[pairs.attempt]
        labels = ev.classes
        keep = src != dst
    else:
        src, dst = holds.inst[pairs.hold], ev.inst[pairs.attempt]
        labels = [ev.names[i] for i in ev.inst_name]
        keep = np.ones(len(src), bool)
    idx = np.flatnonzero(keep)
    width = max(len(labels), 1)
    key = src[idx].astype(np.int64) * width + dst[idx]
    order = sort_rows(key, ev.ts[pairs.attempt[idx]])
    uniq, first, count = np.unique(key[order], return_index=True, return_counts=True)
    return Graph(
        level=level,
        labels=labels,
        src=(uniq // width).astype(np.int64),
        dst=(uniq % width).astype(np.int64),
        occurrences=idx[order],
        first=first,
        count=count,
    )
