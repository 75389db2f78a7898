"""The lock-order state of traces: everything ``analyze`` and ``diff`` read, as arrays.

An :class:`Order` is what the replay of one trace (or several) leaves once
the events are gone: its tables grow with tasks, locks, call sites and
ordering edges, never with events.  It is built slice by slice
(:mod:`lktrace.replay.reduce`), written to and read from a summary file
(:mod:`lktrace.orderfile`), shipped between processes, and merged.

Everything is numbered:

- a *site* is a lock as one event met it: (file, instance, class, call site,
  stack), so an ordering's two sites carry both graph levels and both call
  paths;
- an *ordering* row is one (held site, attempted site) pair with its count,
  its first occurrence and the first by another task (the witnesses);
- tasks are (file, tid); instances are named locks (shared by files) or
  anonymous ones (one file's address).

Tables are dicts of equal-length numpy arrays; :data:`TABLES` names their
columns and what each refers to, which is all :func:`merge` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lktrace.replay.arrays import reduce_counts, sort_rows
from lktrace.trace import TraceMeta

#: Per table, its columns and what each one indexes: a vocabulary or table
#: of the Order (renumbered on merge), or ``None`` for a plain value.
TABLES: dict[str, dict[str, str | None]] = {
    # per task: file, tid, pid, comm (index into ``comms``)
    "tasks": {"file": "file", "tid": None, "pid": None, "comm": "comms"},
    # per lock instance: its name; file for an anonymous lock, -1 for a named one
    "locks": {"name": "names", "file": "file"},
    # per site
    "sites": {
        "file": "file",
        "lock": "locks",
        "cls": "classes",
        "caller": "callers",
        "stack": "stacks",
    },
    # per ordering (held site -> attempted site): count, first witness, first by another task
    "orderings": {
        "held": "sites",
        "wanted": "sites",
        "count": None,
        "ts": None,
        "task": "tasks",
        "other_ts": None,
        "other_task": "tasks",
    },
    # further tasks (besides the two witnesses) that took an ordering
    "ordering_tasks": {"ordering": "orderings", "task": "tasks"},
    # a lock held at n occurrences of an ordering (kept only when held at all of them)
    "gates": {"ordering": "orderings", "lock": "locks", "n": None},
    # sites where a lock was acquired (the call paths that took it)
    "taken": {"site": "sites"},
    # classes named by an attempt or an acquisition
    "classes_taken": {"cls": "classes"},
    # holds still open at the end: acquired at ``ts``, nesting depth, when taken/asked
    "open": {"task": "tasks", "site": "sites", "ts": None, "depth": None, "origin_ts": None},
    # blocking attempts never granted (the task's last event); depth held before it
    "pending": {"task": "tasks", "site": "sites", "ts": None, "depth": None},
    # releases of a lock the task did not hold: kind (RELEASE_KINDS), owner (-1: none)
    "releases": {"task": "tasks", "site": "sites", "ts": None, "kind": None, "owner": "tasks"},
    # per (task, site) nested to depth >= 2: the deepest, first reached at ts
    "nesting": {"task": "tasks", "site": "sites", "depth": None, "ts": None},
    # wait (kind 0) and hold (kind 1) time histograms per class, ns in log buckets
    "timing": {"cls": "classes", "kind": None, "bucket": None, "n": None},
}

#: Why a release did not match a hold of its task.
RELEASE_KINDS = ("foreign_release", "held_before_start", "unbalanced_release")

#: Vocabularies: lists of strings (or stack frame lists), merged by value.
VOCABULARIES = ("classes", "names", "callers", "comms", "stacks")


@dataclass
class TraceInfo:
    """One trace an Order came from: where, its metadata (stacks apart), what it spans."""

    path: str
    meta: TraceMeta
    events: int
    first_ns: int
    last_ns: int

    @property
    def releases(self) -> bool:
        """Whether the trace records releases (the tracepoint backend does not)."""
        return self.meta.extra.get("releases") != "no"


def empty_tables() -> dict[str, dict[str, np.ndarray]]:
    return {t: {c: np.zeros(0, np.int64) for c in cols} for t, cols in TABLES.items()}


@dataclass
class Order:
    """The lock-order state of one or more traces (see the module docstring)."""

    traces: list[TraceInfo] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    stacks: list[list[str]] = field(default_factory=list)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=empty_tables)

    def __getitem__(self, table: str) -> dict[str, np.ndarray]:
        return self.tables[table]

    def size(self, table: str) -> int:
        cols = self.tables[table]
        return len(next(iter(cols.values()))) if cols else 0

    def __getstate__(self) -> dict:
        """Pickled (back from a worker) with each column in the narrowest integer type its
        values fit: a third of the bytes; :meth:`__setstate__` widens them again."""
        tables = {t: {c: _narrow(v) for c, v in cols.items()} for t, cols in self.tables.items()}
        return {**self.__dict__, "tables": tables}

    def __setstate__(self, state: dict) -> None:
        tables = {
            t: {c: v.astype(np.int64) for c, v in cols.items()}
            for t, cols in state["tables"].items()
        }
        self.__dict__.update({**state, "tables": tables})


def _narrow(col: np.ndarray) -> np.ndarray:
    """``col`` as the narrowest of int8 to int64 that holds its values."""
    if not len(col):
        return col
    lo, hi = int(col.min()), int(col.max())
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return col.astype(t)
    return col


def _vocab_map(into: list, index: dict, values: Sequence) -> np.ndarray:
    """Codes of ``values`` in ``into`` (grown), through ``index`` (value -> code)."""
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):
        key = tuple(v) if isinstance(v, list) else v
        code = index.get(key)
        if code is None:
            code = index[key] = len(into)
            into.append(v)
        out[i] = code
    return out


def merge(orders: Sequence[Order]) -> Order:
    """One Order for several traces, in the order given.

    Tasks, sites and orderings are per file, so they only need renumbering;
    vocabularies merge by value, named locks by name, and the time histograms
    of a class add up (so a fleet's histograms stay one per class, not one per run).
    Merging is associative: merged batches of Orders merge into the same Order.
    """
    if len(orders) == 1:
        return orders[0]
    out = Order()
    index: dict[str, dict] = {v: {} for v in VOCABULARIES}
    named: dict[int, int] = {}  # name code -> lock
    tables: dict[str, dict[str, list[np.ndarray]]] = {
        t: {c: [] for c in cols} for t, cols in TABLES.items()
    }
    offset = dict.fromkeys(TABLES, 0)
    for o in orders:
        maps = {v: _vocab_map(getattr(out, v), index[v], getattr(o, v)) for v in VOCABULARIES}
        maps["file"] = np.arange(len(o.traces), dtype=np.int64) + len(out.traces)
        out.traces += o.traces
        # named locks are shared across files, anonymous ones are new
        locks = o["locks"]
        name = maps["names"][locks["name"]] if len(locks["name"]) else locks["name"]
        lock_map = np.empty(len(name), np.int64)
        for i, (n, f) in enumerate(zip(name.tolist(), locks["file"].tolist(), strict=True)):
            if f < 0:
                got = named.get(n)
                if got is None:
                    got = named[n] = offset["locks"]
                    offset["locks"] += 1
                    tables["locks"]["name"].append(np.array([n]))
                    tables["locks"]["file"].append(np.array([-1]))
            else:
                got = offset["locks"]
                offset["locks"] += 1
                tables["locks"]["name"].append(np.array([n]))
                tables["locks"]["file"].append(maps["file"][[f]])
            lock_map[i] = got
        maps["locks"] = lock_map
        for t in TABLES:
            if t != "locks":
                maps[t] = np.arange(o.size(t), dtype=np.int64) + offset[t]
        for t, cols in TABLES.items():
            if t == "locks":
                continue
            for c, ref in cols.items():
                col = np.asarray(o[t][c])
                if ref is not None and len(col):
                    col = np.where(col >= 0, maps[ref][np.maximum(col, 0)], -1)
                tables[t][c].append(col)
            offset[t] += o.size(t)
    out.tables = {
        t: {c: np.concatenate(v) if v else np.zeros(0, np.int64) for c, v in cols.items()}
        for t, cols in tables.items()
    }
    timing = reduce_counts(out.tables["timing"], ("cls", "kind", "bucket"))
    at = sort_rows(timing["cls"], timing["kind"], timing["bucket"])
    out.tables["timing"] = {c: v[at] for c, v in timing.items()}
    return out
