"""Replay one trace slice by slice into its :class:`~lktrace.replay.order.Order`.

Each time slice (:meth:`TraceReader.slices`) is encoded after the events the
slices before it left open (acquisitions not yet released, attempts not yet
answered), paired (:func:`~lktrace.replay.holds.pair`) and reduced to
fragments of the Order's tables; each table's fragments are merged once they
outgrow what it merged before, so memory follows the distinct rows, not the
events.  Fragments hold ids (sites, tasks, locks, classes) as int32 and an
ordering as one int64 key, held << 32 | wanted; the Order gets int64
columns.  All of it is numpy: Python only loops over distinct strings, sites
and tasks.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.replay.arrays import (
    argmin_per,
    group_rows,
    reduce_counts,
    run_starts,
    sort_rows,
    unique_rows,
)
from lktrace.replay.events import ATTEMPT, RELEASED, Coder, Piece
from lktrace.replay.graph import expand_ranges, ordering_pairs
from lktrace.replay.histogram import hold_histograms
from lktrace.replay.holds import Holds, Seen, pair
from lktrace.replay.order import RELEASE_KINDS, TABLES, Order, TraceInfo
from lktrace.replay.state import Filters
from lktrace.trace import TraceMeta, TraceReader

#: Merge a table's fragments once they hold more rows than it merged before and than
#: this many (orderings; the other tables, which merge down to a fraction, at
#: SMALL_ROWS).
COMPACT_ROWS = 4_000_000
SMALL_ROWS = 2_000_000


def filter_slice(table: pa.Table, filters: Filters, first_ts: int | None) -> pa.Table:
    """The events of one slice that ``filters`` keep (times from the trace's first event)."""
    masks = []
    if filters.comms:
        masks.append(pc.is_in(table["comm"].cast(pa.string()), pa.array(sorted(filters.comms))))
    if filters.tids:
        masks.append(pc.is_in(table["tid"], pa.array(sorted(filters.tids), pa.int32())))
    if first_ts is not None and filters.since_s is not None:
        masks.append(pc.greater_equal(table["ts_ns"], first_ts + int(filters.since_s * 1e9)))
    if first_ts is not None and filters.until_s is not None:
        masks.append(pc.less(table["ts_ns"], first_ts + int(filters.until_s * 1e9)))
    return table.filter(functools.reduce(pc.and_, masks)) if masks else table


# -- sites ---------------------------------------------------------------------


class Sites:
    """Interns (lock, class, call site, stack) tuples of one trace into site ids."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int, int, int], int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, lock: np.ndarray, cls: np.ndarray, caller: np.ndarray, stack: np.ndarray):
        """The site id of each (lock, cls, caller, stack) row."""
        if not len(lock):
            return np.zeros(0, np.int32)
        codes, first = group_rows(lock, cls, caller, stack + 1)
        ids = np.empty(len(first), np.int32)
        keys = zip(*(c[first].tolist() for c in (lock, cls, caller, stack)), strict=True)
        for i, key in enumerate(keys):
            got = self._ids.get(key)
            if got is None:
                got = self._ids[key] = len(self._ids)
            ids[i] = got
        return ids[codes]

    def table(self) -> dict[str, np.ndarray]:
        keys = np.array(list(self._ids), np.int64).reshape(-1, 4)
        return {
            "file": np.zeros(len(keys), np.int64),
            "lock": keys[:, 0],
            "cls": keys[:, 1],
            "caller": keys[:, 2],
            "stack": keys[:, 3],
        }


# -- aggregation of fragments ------------------------------------------------------


def reduce_orderings(frag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Aggregate ordering fragments by key (in order of first appearance): counts add,
    witnesses are the earliest.  Empties ``frag``, freeing each column once used."""
    codes, key = pd.factorize(frag.pop("key"))
    n = len(key)
    ts, task = frag.pop("ts"), frag.pop("task")
    pick = argmin_per(codes, n, ts, task)
    out = {
        "key": key,
        "count": np.bincount(codes, weights=frag.pop("count"), minlength=n).astype(np.int64),
        "ts": ts[pick],
        "task": task[pick],
    }
    del pick
    # the first occurrence by another task: a fragment's first, or else its second
    use_first = task != out["task"][codes]
    cand_task = np.where(use_first, task, frag.pop("other_task"))
    del task
    cand_ts = np.where(use_first, ts, frag.pop("other_ts"))
    del ts, use_first
    cand_ts[cand_task < 0] = np.iinfo(np.int64).max
    other = argmin_per(codes, n, cand_ts, cand_task)
    del codes
    found = other >= 0
    o = np.maximum(other, 0)
    out["other_ts"] = np.where(found, cand_ts[o], 0)
    out["other_task"] = np.where(found, cand_task[o], -1)
    return out


def reduce_nesting(frag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per (task, site): the deepest nesting and when it was first reached."""
    o = sort_rows(frag["task"], frag["site"], -frag["depth"], frag["ts"])
    start = run_starts(frag["task"][o], frag["site"][o])
    return {k: v[o][start] for k, v in frag.items()}


# -- one trace ------------------------------------------------------------------


class Reducer:
    """Accumulates the fragments of one trace's slices into its Order."""

    def __init__(self, releases: bool) -> None:
        self.releases = releases
        self.coder = Coder()
        self.sites = Sites()
        self.seen = Seen()
        self.parts: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in TABLES}
        self.merged: dict[str, int] = {}  # rows of parts[t][0] when it holds t's merged rows
        self.events = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.carry: dict[str, np.ndarray] | None = None
        self._empty_caller = -1
        self.site = np.zeros(0, np.int32)  # per event of the current slice

    def hold_sites(self, p: Piece, h: Holds, event_site: np.ndarray) -> np.ndarray:
        """The site of each hold: its lock and class, where it was taken."""
        if self._empty_caller < 0:
            self._empty_caller = self.coder.callers.setdefault("", len(self.coder.callers))
        o = np.maximum(h.origin, 0)
        out = event_site[o]
        # taken before the trace began, or asked for under another class: a site of its own
        odd = np.flatnonzero((h.origin < 0) | (p.cls[o] != h.cls))
        known = h.origin[odd] >= 0
        caller = np.where(known, p.caller[o[odd]], self._empty_caller)
        stack = np.where(known, p.stack[o[odd]], -1)
        out[odd] = self.sites.ids(h.inst[odd], h.cls[odd], caller, stack)
        return out

    def encode(self, table: pa.Table) -> Piece:
        """One slice's events as arrays, after those the slices before left open."""
        return self.coder.encode(table, self.carry)

    def add(self, p: Piece, final: bool) -> None:
        """Replay one encoded slice (``final``: the trace's last)."""
        self._replay(p, final)
        if final:
            return
        for t in _SMALL:
            if self._pending(t) > max(SMALL_ROWS, self.merged.get(t, 0)):
                self._merge(t)
        if self._pending("orderings") > max(COMPACT_ROWS, self.merged.get("orderings", 0)):
            self.compact()

    def _pending(self, table: str) -> int:
        """Rows of ``table`` gathered since it was last merged."""
        frags = self.parts[table][1:] if table in self.merged else self.parts[table]
        return sum(len(next(iter(f.values()))) for f in frags if f)

    def _merge(self, table: str) -> None:
        """Merge the fragments of ``table`` into one."""
        if len(self.parts[table]) > 1:
            self.parts[table] = [_MERGES[table](self._take(table))]
        if self.parts[table]:
            self.merged[table] = len(next(iter(self.parts[table][0].values())))

    def _replay(self, p: Piece, final: bool) -> None:
        real = ~p.carried
        n = int(real.sum())
        if n:
            ts = p.ts[real]
            lo, hi = int(ts.min()), int(ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        self.events += n
        rp = pair(p, self.seen)
        h = rp.holds
        emit = h.released | final
        self.carry = None if final else self._carry(p, h)
        self.site = self.sites.ids(p.inst, p.cls, p.caller, p.stack)
        hold_site = self.hold_sites(p, h, self.site)
        self._orderings(p, h, rp.depth_before, hold_site)
        self._holds(p, h, emit, hold_site)
        self._releases(p, h, rp.excess, hold_site)
        keep = real & (p.event != RELEASED)
        self.parts["classes_taken"].append({"cls": np.unique(p.cls[keep])})
        if final:
            self._final(p, h, rp.pending, rp.depth_before, hold_site, rp.file_end_ts)
        self.site = self.site[:0]

    def _carry(self, p: Piece, h: Holds) -> dict[str, np.ndarray]:
        """The events the next slice needs to go on: open holds, unanswered attempts."""
        open_ = ~h.released
        if not self.releases:  # nothing is ever released: keep the latest hold of each lock
            key = h.task[open_].astype(np.int64) * max(p.n_inst, 1) + h.inst[open_]
            idx = np.flatnonzero(open_)
            last = np.unique(key[::-1], return_index=True)[1]
            open_ = np.zeros(len(h.task), bool)
            open_[idx[::-1][last]] = True
        pos = [h.start[open_], h.ask[open_]]
        if len(p):
            last = np.flatnonzero(np.r_[p.task[1:] != p.task[:-1], True])
            pos.append(last[p.event[last] == ATTEMPT])
        keep = np.unique(np.concatenate(pos))
        return p.take(keep[keep >= 0])

    def _orderings(self, p: Piece, h: Holds, depth_before: np.ndarray, hold_site) -> None:
        if not self.releases:  # held sets are unknown without releases
            return
        pairs = ordering_pairs(p, h, depth_before)
        keep = ~p.carried[pairs.attempt]
        hold, att = pairs.hold[keep], pairs.attempt[keep]
        if not len(att):
            return
        held, wanted = hold_site[hold], self.site[att]
        key = _key(held, wanted)
        task = p.task[att]
        frag = reduce_orderings(
            {
                "key": key,
                "count": np.ones(len(att), np.int32),
                "ts": p.ts[att],
                "task": task,
                "other_ts": np.zeros(len(att), np.int64),
                "other_task": np.full(len(att), -1, np.int32),
            }
        )
        self.parts["orderings"].append(frag)
        h_, w_, t = unique_rows(held, wanted, task)
        self.parts["ordering_tasks"].append({"key": _key(h_, w_), "task": t})
        self.parts["gates"].append(self._gates(p, h, hold, att, key, frag))

    def _gates(self, p: Piece, h: Holds, hold, att, key, frag) -> dict[str, np.ndarray]:
        """Locks held at every occurrence of an ordering in this slice, besides its own."""
        o = np.argsort(att, kind="stable")
        a = att[o]
        start = run_starts(a)
        size = np.diff(np.r_[start, len(a)])
        group = np.repeat(np.arange(len(start)), size)
        multi = size[group] > 1
        me = np.flatnonzero(multi)
        lo, hi = start[group[me]], start[group[me]] + size[group[me]]
        which, other = expand_ranges(lo, hi)
        me = me[which]
        lock_me, lock_other = h.inst[hold[o[me]]], h.inst[hold[o[other]]]
        ok = lock_me != lock_other
        occ, lock = unique_rows(o[me[ok]], lock_other[ok])
        k, lk, n = _unique_counts(key[occ], lock)
        full = _count_of(frag, k) == n
        return {"key": k[full], "lock": lk[full].astype(np.int32), "n": n[full]}

    def _holds(self, p: Piece, h: Holds, emit: np.ndarray, hold_site: np.ndarray) -> None:
        self.parts["taken"].append({"site": np.unique(hold_site[emit])})
        m = emit & ~h.before_start & ((h.depth == 1) | (not self.releases))
        hist = hold_histograms(h, m)
        self.parts["timing"].append({k: v.astype(_TIMING[k]) for k, v in hist.items()})
        if self.releases:
            nest = np.flatnonzero(emit & (h.depth >= 2))
            where = np.where(h.origin[nest] >= 0, h.origin[nest], h.start[nest])
            frag = {
                "task": h.task[nest].astype(np.int32),
                "site": hold_site[nest],
                "depth": h.depth[nest].astype(np.int32),
                "ts": p.ts[where],
            }
            self.parts["nesting"].append(reduce_nesting(frag))

    def _releases(self, p: Piece, h: Holds, excess: np.ndarray, hold_site) -> None:
        if not self.releases or not len(excess):
            return
        pre = set(h.end[h.before_start].tolist())
        real = ~h.before_start
        holds = pd.DataFrame(
            {
                "inst": h.inst[real],
                "task": h.task[real],
                "acq": h.acquired_ts[real],
                "rel": np.where(h.released[real], h.released_ts[real], np.iinfo(np.int64).max),
            }
        )
        rel = pd.DataFrame(
            {"pos": excess, "inst": p.inst[excess], "rtask": p.task[excess], "ts": p.ts[excess]}
        )
        m = rel.merge(holds, on="inst")
        m = m[(m["acq"] <= m["ts"]) & (m["ts"] <= m["rel"]) & (m["task"] != m["rtask"])]
        owner = dict(zip(m["pos"].tolist(), m["task"].tolist(), strict=False))
        pos = excess.tolist()
        foreign, before, unbalanced = range(len(RELEASE_KINDS))
        kind = [foreign if x in owner else before if x in pre else unbalanced for x in pos]
        self.parts["releases"].append(
            {
                "task": p.task[excess].astype(np.int64),
                "site": self.site[excess],
                "ts": p.ts[excess],
                "kind": np.array(kind, np.int64),
                "owner": np.array([owner.get(x, -1) for x in pos], np.int64),
            }
        )

    def _final(self, p, h, pending, depth_before, hold_site, file_end) -> None:
        open_ = np.flatnonzero(~h.released)
        o = open_[sort_rows(h.task[open_], h.acquired_ts[open_], h.inst[open_])]
        self.parts["open"].append(
            {
                "task": h.task[o].astype(np.int64),
                "site": hold_site[o],
                "ts": h.acquired_ts[o],
                "depth": h.depth[o].astype(np.int64),
                "origin_ts": p.ts[np.maximum(h.origin[o], 0)],
            }
        )
        self.parts["pending"].append(
            {
                "task": p.task[pending].astype(np.int64),
                "site": self.site[pending],
                "ts": p.ts[pending],
                "depth": depth_before[pending].astype(np.int64),
            }
        )

    def _take(self, table: str) -> dict[str, np.ndarray] | None:
        """The fragments of ``table`` as one, dropping them (None when there are none)."""
        frags, self.parts[table] = self.parts[table], []
        return _concat(frags) if frags else None

    def compact(self) -> None:
        """Merge the fragments gathered so far, one table at a time (the orderings, the
        largest, last); the gates keep the locks held at every occurrence so far."""
        for t in _MERGES:
            self._merge(t)
        gates = self.parts["gates"]
        if gates and gates[0]:  # an ordering missing a lock once misses it for good
            full = _count_of(self.parts["orderings"][0], gates[0]["key"]) == gates[0]["n"]
            gates[0] = {k: v[full] for k, v in gates[0].items()}
            self.merged["gates"] = int(full.sum())

    def order(self, path: str, meta: TraceMeta) -> Order:
        """The Order of the whole trace (after its final slice)."""
        self.compact()
        parts = {t: self._take(t) for t in TABLES}
        c = self.coder
        tables: dict[str, dict[str, np.ndarray]] = {}
        none = np.zeros(0, np.int64)
        rows = parts["orderings"] or {k: none for k in ("key", *_ORDERING_VALUES)}
        # in time order (first witnesses), which is also what compresses best
        by_ts = sort_rows(rows["ts"])
        rkey = rows.pop("key")[by_ts]
        row_of = pd.Index(rkey)
        tables["orderings"] = rows = {
            "held": rkey >> 32,
            "wanted": rkey & 0xFFFFFFFF,
            **_int64(_taken(rows, by_ts)),
        }
        del rkey, by_ts
        ot = parts["ordering_tasks"] or {"key": none, "task": none}
        r = row_of.get_indexer(ot["key"])
        extra = (ot["task"] != rows["task"][r]) & (ot["task"] != rows["other_task"][r])
        tables["ordering_tasks"] = _sorted(
            {"ordering": r[extra], "task": ot["task"][extra]}, "ordering", "task"
        )
        g = parts["gates"] or {"key": none, "lock": none, "n": none}
        gates = {"ordering": row_of.get_indexer(g["key"]), "lock": g["lock"], "n": g["n"]}
        del row_of
        tables["gates"] = _sorted(gates, "ordering", "lock")
        for t in ("taken", "classes_taken", "open", "pending", "releases", "nesting", "timing"):
            tables[t] = parts[t] or {k: none for k in TABLES[t]}
        tables["timing"] = _sorted(tables["timing"], "cls", "kind", "bucket")
        tables = {t: _int64(cols) for t, cols in tables.items()}
        # only the stacks the sites use, renumbered
        sites = self.sites.table()
        used = np.unique(sites["stack"][sites["stack"] >= 0])
        remap = np.full(int(used.max()) + 1 if len(used) else 1, -1, np.int64)
        remap[used] = np.arange(len(used))
        sites["stack"] = np.where(sites["stack"] >= 0, remap[np.maximum(sites["stack"], 0)], -1)
        # an id past the trace's table (a trace without one) is an unknown, empty stack
        stacks = [meta.stacks[i] if i < len(meta.stacks) else [] for i in used.tolist()]
        tables["sites"] = sites
        names = list(c.names)
        inst_name = np.array(c.inst_name, np.int64)
        named = np.array([not names[n].startswith("0x") for n in c.inst_name], bool)
        tables["locks"] = {"name": inst_name, "file": np.where(named, -1, 0).astype(np.int64)}
        tables["tasks"] = {
            "file": np.zeros(c.n_task, np.int64),
            "tid": np.array(c.tids, np.int64),
            "pid": np.array(c.pids, np.int64),
            "comm": np.array(c.task_comm, np.int64),
        }
        info_meta = TraceMeta(**{**meta.__dict__, "stacks": []})
        info = TraceInfo(path, info_meta, self.events, self.first_ts or 0, self.last_ts or 0)
        return Order(
            traces=[info],
            classes=list(c.classes),
            names=names,
            callers=list(c.callers),
            comms=list(c.comms),
            stacks=stacks,
            tables=tables,
        )


def _key(held: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The key of each ordering (held site -> wanted site): held << 32 | wanted."""
    return held.astype(np.int64) << 32 | wanted


def _int64(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``table`` with int64 columns, as the Order holds them."""
    return {k: v.astype(np.int64, copy=False) for k, v in table.items()}


def _taken(table: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The ``rows`` of ``table``, emptying it column by column."""
    return {k: table.pop(k)[rows] for k in list(table)}


def _sorted(table: dict[str, np.ndarray], *by: str) -> dict[str, np.ndarray]:
    """``table`` with its rows sorted by the columns ``by`` (emptying ``table``)."""
    return _taken(table, sort_rows(*(table[c] for c in by)))


def _count_of(rows: dict[str, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """The count of the ordering of each key; -1 when absent."""
    at = pd.Index(rows["key"]).get_indexer(keys)
    return np.where(at >= 0, rows["count"][at], -1)


def _unique_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, first = group_rows(a, b)
    return a[first], b[first], np.bincount(codes, minlength=len(first)).astype(np.int64)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The fragments as one table, emptying them column by column (one column's copy at a
    time above the data)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p.pop(k) for p in parts]) for k in list(parts[0])}


def _unique_tasks(frag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Distinct (ordering key, task) rows."""
    _, first = group_rows(frag["key"], frag["task"])
    return {"key": frag["key"][first], "task": frag["task"][first]}


def _unique_columns(frag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.unique(v) for k, v in frag.items()}


#: How each table merges its fragments (the orderings, the largest, last).
_MERGES: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
    "nesting": reduce_nesting,
    "ordering_tasks": _unique_tasks,
    "timing": lambda f: reduce_counts(f, ("cls", "kind", "bucket")),
    "taken": _unique_columns,
    "classes_taken": _unique_columns,
    "gates": lambda f: reduce_counts(f, ("key", "lock")),
    "orderings": reduce_orderings,
}
#: The tables merged as they go (they merge down to a fraction of their fragments).
_SMALL = tuple(_MERGES)[:-1]
#: The columns of an ordering fragment besides its key.
_ORDERING_VALUES = ("count", "ts", "task", "other_ts", "other_task")
#: The types of the time histograms' columns in fragments.
_TIMING = {"cls": np.int32, "kind": np.int8, "bucket": np.int32, "n": np.int64}


def return_freed_memory() -> None:
    """Have glibc give large freed blocks back to the system at once.

    Its default raises the size above which it maps memory afresh as blocks
    are freed, after which the slices' arrays come from the heap, and the
    heap, fragmented, keeps hundreds of MB that nothing uses.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 22)


_M_MMAP_THRESHOLD = -3


def summarize_trace(
    path: str | Path,
    filters: Filters | None = None,
    progress: Callable[[int], None] | None = None,
) -> Order:
    """Replay the trace at ``path`` (one slice at a time) into its Order.

    ``progress`` is called with the number of rows read after each slice.
    """
    return_freed_memory()
    reader = TraceReader(path)
    filters = filters or Filters()
    red = Reducer(reader.meta.extra.get("releases") != "no")
    first = reader.first_ts
    last = reader.num_slices - 1
    for i, table in enumerate(reader.slices()):
        rows = table.num_rows
        piece = red.encode(filter_slice(table, filters, first))
        del table  # the reader keeps none: the replay holds this slice's arrays and the next slice
        red.add(piece, final=i == last)
        del piece
        if progress:
            progress(rows)
    return red.order(str(path), reader.meta)
