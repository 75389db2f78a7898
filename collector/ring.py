"""The flight recorder's memory: the last seconds of events, bounded in time and in bytes.

Events stay the decoded format v1 tables the drain makes (columnar Arrow, about 60 bytes
an event, no Python object per event) in a queue of batches; a batch goes once all of it
is older than the window or the bytes are over the bound. Alongside, :class:`OpenState`
follows the stream batch by batch: each task's blocking attempt still unanswered and
each lock a task acquired and has not released. Those rows outlive the batches they came
in, so a task stuck for longer than the window, or a lock taken before it, still shows in
a snapshot with its time and stack.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.trace import EVENTS, SCHEMA

ATTEMPT, ACQUIRED, FAILED, RELEASED = (EVENTS.index(e) for e in EVENTS)
#: At most this many open holds are followed (the BPF ``held`` map's size): past it the
#: oldest go first.
MAX_HOLDS = 65536


def event_codes(table: pa.Table) -> np.ndarray:
    """The ``event`` column as indices into :data:`EVENTS`, whatever its dictionary."""
    col = table["event"].combine_chunks()
    lookup = np.array([EVENTS.index(e) for e in col.dictionary.to_pylist()], dtype=np.int8)
    return lookup[col.indices.to_numpy(zero_copy_only=False)]


def blocking(api: pa.ChunkedArray) -> np.ndarray:
    """Per value of an ``api`` column, whether the function can wait (all but trylocks)."""
    col = api.combine_chunks()
    lookup = np.array(["trylock" not in a for a in col.dictionary.to_pylist()], dtype=bool)
    return lookup[col.indices.to_numpy(zero_copy_only=False)]


def _last_of_each(keys: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each distinct key (hashing, not sorting)."""
    return np.flatnonzero(~pd.Series(keys).duplicated(keep="last").to_numpy())


def hold_keys(tid: np.ndarray, lock: np.ndarray) -> np.ndarray:
    """One 64-bit key per (task, lock): tids are below 2**22 (PID_MAX_LIMIT)."""
    with np.errstate(over="ignore"):
        return lock.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ tid.astype(np.uint64)


def _empty() -> pa.Table:
    return SCHEMA.empty_table()


class OpenState:
    """What is still open at the end of the stream so far: ``waiting`` holds each task's
    latest blocking attempt not yet answered (acquired or failed), ``holding`` each
    (task, lock) whose latest acquire or release is an acquire. One row each, copied
    out of the batches (format v1 rows), updated with vectorised passes per batch.

    ``holds=False`` (events without releases: the tracepoint backend) follows no holds.
    Nesting is not counted: a lock taken twice and released once is no longer followed
    (the BPF ``held`` map has the depth).
    """

    def __init__(self, holds: bool = True) -> None:
        self.track_holds = holds
        self.waiting = _empty()
        self.holding = _empty()

    @property
    def nbytes(self) -> int:
        return self.waiting.get_total_buffer_size() + self.holding.get_total_buffer_size()

    def update(self, batch: pa.Table) -> None:
        """Take in one batch (in time order)."""
        ev = event_codes(batch)
        tid = batch["tid"].to_numpy()
        calls = np.flatnonzero(ev != RELEASED)
        last = calls[_last_of_each(tid[calls])]
        asked = last[(ev[last] == ATTEMPT) & blocking(batch["api"].take(last))]
        self.waiting = _replace(self.waiting, self.waiting["tid"], tid[last], batch.take(asked))
        if not self.track_holds:
            return
        lock = batch["lock_addr"].to_numpy()
        moves = np.flatnonzero((ev == ACQUIRED) | (ev == RELEASED))
        keys = hold_keys(tid[moves], lock[moves])
        last = _last_of_each(keys)
        taken = moves[last[ev[moves[last]] == ACQUIRED]]
        held_keys = pa.array(
            hold_keys(self.holding["tid"].to_numpy(), self.holding["lock_addr"].to_numpy())
        )
        self.holding = _replace(self.holding, held_keys, keys[last], batch.take(taken))
        if self.holding.num_rows > MAX_HOLDS:
            newest = np.argsort(self.holding["ts_ns"].to_numpy(), kind="stable")[-MAX_HOLDS:]
            self.holding = self.holding.take(np.sort(newest)).combine_chunks()

    def holders(self, locks: np.ndarray) -> pa.Table:
        """The open holds of ``locks`` (addresses)."""
        mask = pc.is_in(self.holding["lock_addr"], pa.array(locks, pa.uint64()))
        return self.holding.filter(mask)


def _replace(
    table: pa.Table, keys: pa.ChunkedArray | pa.Array, gone: np.ndarray, new: pa.Table
) -> pa.Table:
    """``table`` without the rows whose key is in ``gone``, plus ``new``, in one chunk."""
    if table.num_rows and len(gone):
        table = table.filter(pc.invert(pc.is_in(keys, pa.array(np.unique(gone)))))
    if not new.num_rows:
        return table
    return pa.concat_tables([table, new]).combine_chunks()


class Ring:
    """The last ``keep_ns`` of events, at most ``max_bytes`` of them (batches whole: the
    drain's batches are far smaller than the bound), with the :class:`OpenState` that
    outlives them. Offers what the drain writes to (as the spool does)."""

    def __init__(self, keep_ns: int, max_bytes: int, holds: bool = True) -> None:
        self.keep_ns = keep_ns
        self.max_bytes = max_bytes
        self.state = OpenState(holds)
        self._batches: deque[tuple[pa.Table, int, int]] = deque()  # (batch, last ts, bytes)
        self.bytes = 0
        self.events = 0
        self.evicted = 0
        self.last_ns = 0

    def append(self, batch: pa.Table, *_counters: object) -> None:
        """Add one decoded batch (the drain's sink call; the stacks and counters the
        spool keeps with each batch stay with the drain here)."""
        if not batch.num_rows:
            return
        self.state.update(batch)
        last = pc.max(batch["ts_ns"]).as_py()
        size = batch.get_total_buffer_size()
        self._batches.append((batch, last, size))
        self.bytes += size
        self.events += batch.num_rows
        self.last_ns = max(self.last_ns, last)
        self._evict()

    def _evict(self) -> None:
        horizon = self.last_ns - self.keep_ns
        while self._batches and (
            self._batches[0][1] < horizon or self.bytes + self.state.nbytes > self.max_bytes
        ):
            batch, _, size = self._batches.popleft()
            self.bytes -= size
            self.events -= batch.num_rows
            self.evicted += batch.num_rows

    @property
    def size(self) -> int:
        """Bytes held: the window and the open state."""
        return self.bytes + self.state.nbytes

    @property
    def first_ns(self) -> int | None:
        """The time of the oldest event in the window."""
        if not self._batches:
            return None
        return pc.min(self._batches[0][0]["ts_ns"]).as_py()

    def snapshot(self) -> tuple[pa.Table, int]:
        """The window as one table (no copy), preceded by the open rows from before it;
        returns it and the number of those rows."""
        batches = [b for b, _, _ in self._batches]
        first = batches[0]["seq"][0].as_py() if batches else None
        early = [
            t.filter(pc.less(t["seq"], first)) if first is not None else t
            for t in (self.state.holding, self.state.waiting)
        ]
        pinned = sum(t.num_rows for t in early)
        return pa.concat_tables([*early, *batches]), pinned
