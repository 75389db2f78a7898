"""Replay one trace slice by slice into its :class:`~lktrace.replay.order.Order`.

Each time slice (:meth:`TraceReader.slices`) is encoded after the events the
slices before it left open (acquisitions not yet released, attempts not yet
answered), paired (:func:`~lktrace.replay.holds.pair`) and reduced to
fragments of the Order's tables; the fragments are merged now and then, so
memory follows the distinct orderings, not the events.  All of it is numpy:
Python only loops over distinct strings, sites and tasks.
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

#: Merge the fragments once they hold this many orderings (or as many as merged before).
COMPACT_ROWS = 4_000_000


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
            return np.zeros(0, np.int64)
        codes, first = group_rows(lock, cls, caller, stack + 1)
        ids = np.empty(len(first), np.int64)
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
    """Aggregate ordering fragments by (held, wanted): counts add, witnesses are the earliest."""
    codes, first = group_rows(frag["held"], frag["wanted"])
    n = len(first)
    pick = argmin_per(codes, n, frag["ts"], frag["task"])
    # the first occurrence by another task: a fragment's first, or else its second
    use_first = frag["task"] != frag["task"][pick][codes]
    cand_task = np.where(use_first, frag["task"], frag["other_task"])
    cand_ts = np.where(use_first, frag["ts"], frag["other_ts"])
    del use_first
    cand_ts[cand_task < 0] = np.iinfo(np.int64).max
    other = argmin_per(codes, n, cand_ts, cand_task)
    found = other >= 0
    o = np.maximum(other, 0)
    return {
        "held": frag["held"][first],
        "wanted": frag["wanted"][first],
        "count": np.bincount(codes, weights=frag["count"], minlength=n).astype(np.int64),
        "ts": frag["ts"][pick],
        "task": frag["task"][pick],
        "other_ts": np.where(found, cand_ts[o], 0),
        "other_task": np.where(found, cand_task[o], -1),
    }


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
        self.rows_pending = 0
        self.compacted = False  # parts["orderings"][0] holds the merged fragments
        self.events = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.carry: dict[str, np.ndarray] | None = None
        self._empty_caller = -1
        self.site = np.zeros(0, np.int64)  # per event of the current slice

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

    def add(self, table: pa.Table, final: bool) -> None:
        """Replay one slice (``final``: the trace's last)."""
        self._replay(table, final)
        merged = len(self.parts["orderings"][0]["held"]) if self.compacted else 0
        if self.rows_pending > max(COMPACT_ROWS, merged):
            self.compact()

    def _replay(self, table: pa.Table, final: bool) -> None:
        p = self.coder.encode(table, self.carry)
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
        self.parts["classes_taken"].append({"cls": np.unique(p.cls[keep]).astype(np.int64)})
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
        ts, task = p.ts[att], p.task[att].astype(np.int64)
        frag = reduce_orderings(
            {
                "held": held,
                "wanted": wanted,
                "count": np.ones(len(att), np.int64),
                "ts": ts,
                "task": task,
                "other_ts": np.zeros(len(att), np.int64),
                "other_task": np.full(len(att), -1, np.int64),
            }
        )
        self.parts["orderings"].append(frag)
        self.rows_pending += len(frag["held"])
        key = held << 32 | wanted
        h_, w_, t = unique_rows(held, wanted, task)
        self.parts["ordering_tasks"].append({"key": h_ << 32 | w_, "task": t})
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
        occ, lock = unique_rows(o[me[ok]], lock_other[ok].astype(np.int64))
        k, lk, n = _unique_counts(key[occ], lock)
        full = _count_of(frag, k) == n
        return {"key": k[full], "lock": lk[full], "n": n[full]}

    def _holds(self, p: Piece, h: Holds, emit: np.ndarray, hold_site: np.ndarray) -> None:
        self.parts["taken"].append({"site": np.unique(hold_site[emit])})
        m = emit & ~h.before_start & ((h.depth == 1) | (not self.releases))
        self.parts["timing"].append(hold_histograms(h, m))
        if self.releases:
            nest = np.flatnonzero(emit & (h.depth >= 2))
            where = np.where(h.origin[nest] >= 0, h.origin[nest], h.start[nest])
            frag = {
                "task": h.task[nest].astype(np.int64),
                "site": hold_site[nest],
                "depth": h.depth[nest].astype(np.int64),
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
        """Merge the fragments gathered so far, one table at a time, freeing each as it goes."""
        parts = self.parts
        merges = (
            ("orderings", reduce_orderings),
            ("nesting", reduce_nesting),
            ("ordering_tasks", _unique_tasks),
            ("timing", lambda f: reduce_counts(f, ("cls", "kind", "bucket"))),
            ("taken", _unique_columns),
            ("classes_taken", _unique_columns),
        )
        for t, merge in merges:
            if len(parts[t]) > 1:
                parts[t] = [merge(self._take(t))]
        self.compacted = bool(parts["orderings"])
        if len(parts["gates"]) > 1:
            g = reduce_counts(self._take("gates"), ("key", "lock"))
            full = _count_of(parts["orderings"][0], g["key"]) == g["n"]
            parts["gates"] = [{k: v[full] for k, v in g.items()}]
        self.rows_pending = 0

    def order(self, path: str, meta: TraceMeta) -> Order:
        """The Order of the whole trace (after its final slice)."""
        self.compact()
        parts = {t: self._take(t) for t in TABLES}
        c = self.coder
        tables: dict[str, dict[str, np.ndarray]] = {}
        rows = parts["orderings"] or {k: np.zeros(0, np.int64) for k in TABLES["orderings"]}
        # in time order (first witnesses), which is also what compresses best
        rows = _sorted(rows, "ts")
        rkey = rows["held"] << 32 | rows["wanted"]
        row_of = pd.Index(rkey)
        tables["orderings"] = rows
        ot = parts["ordering_tasks"] or {"key": rkey[:0], "task": rkey[:0]}
        r = row_of.get_indexer(ot["key"])
        extra = (ot["task"] != rows["task"][r]) & (ot["task"] != rows["other_task"][r])
        tables["ordering_tasks"] = _sorted(
            {"ordering": r[extra], "task": ot["task"][extra]}, "ordering", "task"
        )
        g = parts["gates"] or {"key": rkey[:0], "lock": rkey[:0], "n": rkey[:0]}
        gates = {"ordering": row_of.get_indexer(g["key"]), "lock": g["lock"], "n": g["n"]}
        tables["gates"] = _sorted(gates, "ordering", "lock")
        for t in ("taken", "classes_taken", "open", "pending", "releases", "nesting", "timing"):
            tables[t] = parts[t] or {k: np.zeros(0, np.int64) for k in TABLES[t]}
        tables["timing"] = _sorted(tables["timing"], "cls", "kind", "bucket")
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


def _sorted(table: dict[str, np.ndarray], *by: str) -> dict[str, np.ndarray]:
    """``table`` with its rows sorted by the columns ``by``."""
    order = sort_rows(*(table[c] for c in by))
    return {k: v[order] for k, v in table.items()}


def _count_of(rows: dict[str, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """The count of the ordering of each (held << 32 | wanted) key; -1 when absent."""
    at = pd.Index(rows["held"] << 32 | rows["wanted"]).get_indexer(keys)
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
        red.add(filter_slice(table, filters, first), final=i == last)
        del table
        if progress:
            progress(rows)
    return red.order(str(path), reader.meta)
