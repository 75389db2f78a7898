"""Compare the lock behaviour of two recordings of one workload (``lktrace diff``).

Both sides are replayed with the same filters and analysed
(:class:`~lktrace.replay.side.Side`); this module only matches what they
found.  Locks match by name: classes by class name, instances by lock name
(``pci:0000:01:00.0``), and an anonymous lock, named by an address that
changes between boots, by its class (:mod:`~lktrace.replay.identity`).
Call paths match by symbol without offsets, from the call site outward.

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

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

import numpy as np
import pandas as pd

from lktrace.replay.analyze import Options
from lktrace.replay.arrays import sort_rows
from lktrace.replay.changes import (
    NESTING_ERRORS,
    NESTING_KINDS,
    CycleChange,
    CycleEdge,
    DepthChange,
    Diff,
    Nesting,
    PathStatus,
    Timing,
)
from lktrace.replay.findings import Inversion
from lktrace.replay.identity import CycleKey, lock_key
from lktrace.replay.keys import Vocabs, member, pack, unpack
from lktrace.replay.orderings import ENTRY, OrderingChanges
from lktrace.replay.side import Key, Side
from lktrace.replay.state import ReplayState, replay
from lktrace.trace import Trace

T = TypeVar("T")


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
    keep_states: bool = False,
) -> tuple[Side, Side]:
    """Both sides replayed and analysed with the same options, for :func:`compare`
    (and, with ``keep_states``, for drawing them).  Both graph levels are always
    built: orderings are compared at both."""
    opts = replace(opts or Options(), level="both")
    return side_pair(lambda t: replay(t, opts, drop_tables), (old, new), opts, keep_states)


def side_pair(
    state_of: Callable[[T], ReplayState],
    inputs: tuple[T, T],
    opts: Options,
    keep_states: bool = False,
) -> tuple[Side, Side]:
    """The sides of ``inputs`` (old, new), whose states ``state_of`` makes, sharing
    their vocabularies.  One is built after the other and, unless ``keep_states``,
    each state is gone once its side is keyed: the two are never in memory at once."""
    vocabs = Vocabs()
    old, new = inputs
    a = Side(state_of(old), opts, vocabs, keep_states)
    return a, Side(state_of(new), opts, vocabs, keep_states)


def compare(a: Side, b: Side) -> Diff:
    """What changed from side ``a`` (old) to side ``b`` (new)."""
    if a.vocabs is not b.vocabs:
        raise ValueError("the sides of a diff share their vocabularies: make them with side_pair")
    notes = [f"old: {n}" for n in a.notes] + [f"new: {n}" for n in b.notes]
    blind = a.no_releases + b.no_releases
    if blind:  # held sets, hence orders and nesting, are unknown on that side
        notes.append(f"no release events in {', '.join(blind)}: only wait times are compared")
        return Diff("same", a.analysis.traces, b.analysis.traces, notes, timing=_timing(a, b))
    wanted = a.opts.classes  # --class: only changes on these lock classes
    ranks = a.vocabs.locks.ranks(), a.vocabs.paths.ranks()
    added, gone = _only(b, a, wanted, ranks), _only(a, b, wanted, ranks)

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
        cls = (a.nesting.get((lock, path)) or b.nesting[(lock, path)])[1]
        if how and (not wanted or cls in wanted):
            depth.append(DepthChange(cls, lock, path, was, now, how))

    worse = introduced or any(d.change == "worse" for d in depth)
    better = fixed or any(d.change == "better" for d in depth)
    return Diff(
        verdict="worse" if worse else "better" if better else "same",
        old=a.analysis.traces,
        new=b.analysis.traces,
        notes=notes,
        edges_added=_pick(added, exercised=True, in_both=False),
        edges_removed=_pick(gone, exercised=True, in_both=False),
        paths_added=_pick(added, exercised=True, in_both=True),
        paths_removed=_pick(gone, exercised=True, in_both=True),
        not_exercised=_pick(gone, exercised=False),
        new_coverage=_pick(added, exercised=False),
        inversions_fixed=_sorted(fixed),
        inversions_introduced=_sorted(introduced),
        inversions_remaining=_sorted(remaining),
        inversions_not_exercised=_sorted(unexercised),
        depth_changes=depth,
        timing=[t for t in _timing(a, b) if not wanted or t.lock_class in wanted],
    )


def _only(
    side: Side, other: Side, classes: set[str], ranks: tuple[np.ndarray, np.ndarray]
) -> OrderingChanges:
    """The listed orderings of ``side`` that ``other`` lacks, on ``classes`` (their
    witness; all when none are given), sorted by level, lock keys and call path."""
    lock_rank, path_rank = ranks
    cols: dict[str, list[np.ndarray]] = {c: [] for c in (*ENTRY, "sort")}
    for i, level in enumerate(side.levels):
        mine, theirs = side.orderings[level], other.orderings[level]
        rows = mine.missing_from(theirs)
        at = mine.witness_rows(rows)
        on = mine.witnesses.on_classes(classes)[at]
        rows, at = rows[on], at[on]
        edge, path = mine.edge[rows], mine.path[rows]
        src, dst = unpack(edge)
        cols["level"].append(np.full(len(rows), i))
        cols["row"].append(rows)
        cols["witness"].append(at)
        cols["edge_in_both"].append(member(edge, theirs.edge))
        cols["exercised"].append(member(pack(src, path), other.taken[level]))
        order_by = np.full(len(rows), i), lock_rank[src], lock_rank[dst], path_rank[path]
        cols["sort"].append(np.stack(order_by, axis=1))
    joined = {c: np.concatenate(v) for c, v in cols.items()}
    by = joined.pop("sort")
    order = sort_rows(*by.T)
    return OrderingChanges(side, **joined).where(order)


def _pick(
    changes: OrderingChanges, exercised: bool, in_both: bool | None = None
) -> OrderingChanges:
    """The entries whose call path the other trace ran (or not), whose edge is in both
    traces (or not; either when None)."""
    mask = changes.cols["exercised"] == exercised
    if in_both is not None:
        mask &= changes.cols["edge_in_both"] == in_both
    return changes.where(mask)


def _ran(side: Side, key: Key) -> bool:
    """Whether ``side`` took the ordering's first lock on its call path."""
    return side.ran(key[0], key[1], key[3])


def _status(a: Side, b: Side, key: Key) -> str:
    """How an ordering of either side fares in the new trace."""
    if a.has(key):
        return "kept" if b.has(key) else "removed" if _ran(b, key) else "not_exercised"
    return "added"


def _cycle(a: Side, b: Side, key: CycleKey, inv: Inversion) -> CycleChange:
    """Compare one cycle, found as ``inv`` in one of the sides, edge by edge."""
    level = key[0]
    edges = []
    exercised = True  # for a new cycle: the old trace ran a call path of every new edge
    for w in inv.edges:
        edge = (level, lock_key(level, w.src, w.src_class), lock_key(level, w.dst, w.dst_class))
        was, now = a.paths_of(edge), b.paths_of(edge)
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
