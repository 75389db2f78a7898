"""Export a trace as Chrome JSON trace events, for ui.perfetto.dev and chrome://tracing.

One track per task (``pid``/``tid``) with a complete slice (``ph: X``) per
held lock, nested by how many locks the task already held, and a ``wait``
slice before it when the task had to wait.  Attempts never granted are
instant events (plus a wait slice to the end of the trace).  A flow arrow
goes from a release of lock L by task X to the acquisition of L by task Y
when Y was already waiting for L at that release and it was the last
release before Y got the lock.

Complete slices must nest on a track.  A hold released after a lock taken
before it (hand-over-hand locking) does not; it goes on a second track of
its task, ``comm/tid (overlapping)``, so no slice is dropped by the viewer.

Everything is built as Arrow string columns and written in chunks, so a
10 M event trace exports without a Python object per event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.replay.events import RELEASED, Events
from lktrace.replay.holds import Replay
from lktrace.replay.state import Filters, replay
from lktrace.trace import Trace, TraceError
from lktrace.version import writer_metadata

#: Added to a tid for its overlapping-holds track (above any pid_max).
OVERLAP_TID = 1 << 30
CHUNK = 1 << 18


def _json_values(values: list[str]) -> pa.Array:
    """JSON string literals of ``values``, to ``take`` by code."""
    return pa.array([json.dumps(v) for v in values], pa.string())


def _num(a: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(a), pa.string())


def _us(ns: np.ndarray) -> pa.Array:
    """Non-negative nanoseconds as microseconds with three decimals (exact, no float)."""
    ns = np.asarray(ns, np.int64)
    frac = pc.utf8_lpad(_num(ns % 1000), width=3, padding="0")
    return pc.binary_join_element_wise(_num(ns // 1000), ".", frac, "")


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


class _Tracks:
    """Holds placed on tracks: the stack level of each, and which ones overlap."""

    def __init__(self, ev: Events, rp: Replay) -> None:
        h = rp.holds
        task_last = np.flatnonzero(np.r_[ev.task[1:] != ev.task[:-1], True])
        task_first = np.r_[0, task_last[:-1] + 1]
        # Positions scaled by 3 so a lock held from before the trace opens first
        # and one held at the end closes last, inside the task's own range.
        s = np.where(h.before_start, 3 * task_first[h.task], 3 * h.start + 1)
        e = np.where(h.released, 3 * h.end + 1, 3 * task_last[h.task] + 2)
        opened = np.searchsorted(np.sort(s), s, "left")
        closed = np.searchsorted(np.sort(e), s, "left")
        self.level = (opened - closed).astype(np.int64)
        # The parent is the latest hold one level up that opened before this one;
        # a hold overlaps when it outlives a parent still open when it began.
        width = int(e.max()) + 1 if len(e) else 1
        key = self.level * width + s
        order = np.argsort(key, kind="stable")
        j = np.searchsorted(key[order], key - width, "left") - 1
        parent = order[np.maximum(j, 0)]
        ok = (j >= 0) & (self.level > 0) & (self.level[parent] == self.level - 1)
        self.overlaps = ok & (e[parent] > s) & (e > e[parent])


def export_perfetto(
    trace: Trace, out: str | Path, drop_table: bool = False, filters: Filters | None = None
) -> int:
    """Write ``trace`` (what ``filters`` select of it) as a JSON trace-event file;
    returns the number of events written.

    ``drop_table`` empties ``trace.table`` once loaded, to save memory.
    """
    state = replay([trace], filters, drop_table)
    ev, rp = state.events, state.replay
    out = Path(out)
    try:
        f = out.open("wb")
    except OSError as e:
        raise TraceError(out, f"cannot write: {e.strerror or e}") from e
    written = 0
    with f:
        meta = {"source": str(trace.path), "kernel": trace.meta.kernel, "host": trace.meta.host}
        meta.update(writer_metadata())
        f.write(b'{"displayTimeUnit":"ns","otherData":' + json.dumps(meta).encode())
        f.write(b',"traceEvents":[\n')
        first = True
        for chunk in _events(ev, rp):
            data, n = _buffer(chunk)
            if first and n:
                data, first = data[2:], False  # no separator before the first event
            f.write(data)
            written += n
        f.write(b"\n]}\n")
    return written


def _buffer(strings: pa.Array) -> tuple[memoryview, int]:
    """The bytes of a string array, each element prefixed with a separator."""
    strings = _join(",\n", strings)
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    data = memoryview(strings.buffers()[2]) if len(strings) else memoryview(b"")
    return data[offsets[0] : offsets[-1]] if len(strings) else data, len(strings)


def _events(ev: Events, rp: Replay) -> Iterator[pa.Array]:
    """Chunks of JSON trace-event objects: tracks, slices, instants, flows."""
    if not len(ev):
        return
    h = rp.holds
    t0 = int(ev.ts.min())
    tasks = ev.tasks
    tids = tasks["tid"].to_numpy(np.int64)
    pids = tasks["pid"].to_numpy(np.int64)
    comms = tasks["comm"].astype(str).tolist()
    tracks = _Tracks(ev, rp)
    overlap_tasks = set(h.task[tracks.overlaps].tolist())

    # Track names: processes by pid, threads by tid (and their overlap tracks).
    procs = tasks.drop_duplicates("pid")
    meta = [
        {"ph": "M", "name": "process_name", "pid": int(p), "args": {"name": f"{c} [{p}]"}}
        for p, c in zip(procs["pid"], procs["comm"], strict=True)
    ]
    for i, (pid, tid, comm) in enumerate(zip(pids, tids, comms, strict=True)):
        meta.append(
            {"ph": "M", "name": "thread_name", "pid": int(pid), "tid": int(tid),
             "args": {"name": f"{comm}/{tid}"}}
        )  # fmt: skip
        if i in overlap_tasks:
            meta.append(
                {"ph": "M", "name": "thread_name", "pid": int(pid),
                 "tid": int(tid) + OVERLAP_TID, "args": {"name": f"{comm}/{tid} (overlapping)"}}
            )  # fmt: skip
    yield pa.array([json.dumps(m) for m in meta], pa.string())

    names = _json_values(ev.names)
    classes = _json_values(ev.classes)
    callers = _json_values([*ev.callers, ""])
    no_caller = len(ev.callers)
    track_tid = tids[h.task] + np.where(tracks.overlaps, OVERLAP_TID, 0)
    first_event = ev.ts[np.minimum(h.start + 1, len(ev) - 1)]  # of the task, for a hold from before
    start = np.where(h.before_start, first_event, h.acquired_ts)
    caller = np.where(h.origin >= 0, ev.caller[np.maximum(h.origin, 0)], no_caller)
    for lo in range(0, len(h.task), CHUNK):
        sl = slice(lo, lo + CHUNK)
        yield _slices(
            names.take(ev.inst_name[h.inst[sl]]),
            classes.take(h.cls[sl]),
            start[sl] - t0,
            h.released_ts[sl] - start[sl],
            pids[h.task[sl]],
            track_tid[sl],
            callers.take(caller[sl]),
            "depth",
            _num(tracks.level[sl]),
        )
        waited = np.flatnonzero(h.attempt_ts[sl] < h.acquired_ts[sl]) + lo
        yield _slices(
            _prefixed("wait ", names.take(ev.inst_name[h.inst[waited]])),
            classes.take(h.cls[waited]),
            h.attempt_ts[waited] - t0,
            h.acquired_ts[waited] - h.attempt_ts[waited],
            pids[h.task[waited]],
            tids[h.task[waited]],
            callers.take(caller[waited]),
            "wait",
            pa.array(np.full(len(waited), "true")),
        )
    yield from _pending(ev, rp, names, classes, callers, pids, tids, t0)
    yield from _flows(ev, rp, tracks, pids, tids, t0)


def _place(ts: np.ndarray, pid: np.ndarray, tid: np.ndarray) -> list:
    """The ``ts``, ``pid`` and ``tid`` members of an event, as parts for :func:`_join`."""
    return [',"ts":', _us(ts), ',"pid":', _num(pid), ',"tid":', _num(tid)]


def _prefixed(prefix: str, literals: pa.Array) -> pa.Array:
    """JSON string literals with ``prefix`` put inside the quotes."""
    return _join(f'"{prefix}', pc.utf8_slice_codeunits(literals, 1))


def _slices(name, cat, ts, dur, pid, tid, caller, arg: str, value) -> pa.Array:
    """Complete events with ``args`` {``arg``: ``value``, ``caller``: ``caller``}."""
    return _join(
        '{"ph":"X","name":',
        name,
        ',"cat":',
        cat,
        *_place(ts, pid, tid),
        ',"dur":',
        _us(dur),
        f',"args":{{"{arg}":',
        value,
        ',"caller":',
        caller,
        "}}",
    )


def _pending(ev, rp, names, classes, callers, pids, tids, t0) -> Iterator[pa.Array]:
    """Attempts never granted: an instant at the attempt, a wait slice to the trace end."""
    p = rp.pending
    if not len(p):
        return
    name = names.take(ev.inst_name[ev.inst[p]])
    end = rp.file_end_ts[ev.file[p]]
    yield _slices(
        _prefixed("wait ", name),
        classes.take(ev.cls[p]),
        ev.ts[p] - t0,
        end - ev.ts[p],
        pids[ev.task[p]],
        tids[ev.task[p]],
        callers.take(ev.caller[p]),
        "wait",
        pa.array(np.full(len(p), "true")),
    )
    yield _join(
        '{"ph":"i","s":"t","name":',
        _prefixed("never granted: ", name),
        ',"cat":',
        classes.take(ev.cls[p]),
        *_place(ev.ts[p] - t0, pids[ev.task[p]], tids[ev.task[p]]),
        ',"args":{"caller":',
        callers.take(ev.caller[p]),
        "}}",
    )


def unblocks(ev: Events, rp: Replay) -> tuple[np.ndarray, np.ndarray]:
    """(release position, hold index) pairs: the release that let a waiting task in.

    For each acquisition that waited, the last release of the same lock at or
    before it, if made by another task after the waiter asked for the lock.
    """
    h = rp.holds
    rel_pos = np.flatnonzero(ev.event == RELEASED)
    waiters = np.flatnonzero((h.attempt_ts < h.acquired_ts) & ~h.before_start)
    n_r = len(rel_pos)
    inst = np.r_[ev.inst[rel_pos], h.inst[waiters]]
    ts = np.r_[ev.ts[rel_pos], h.acquired_ts[waiters]]
    is_query = np.r_[np.zeros(n_r, bool), np.ones(len(waiters), bool)]
    order = np.lexsort((is_query, ts, inst))
    last_rel = np.maximum.accumulate(np.where(~is_query[order], np.arange(len(order)), -1))
    q = np.flatnonzero(is_query[order])
    r = last_rel[q]
    ok = r >= 0
    r_idx = order[np.maximum(r, 0)]  # index into the combined arrays: < n_r is a release
    w_idx = order[q] - n_r
    ok &= r_idx < n_r
    rel = rel_pos[np.minimum(r_idx, max(n_r - 1, 0))] if n_r else r_idx
    hold = waiters[w_idx]
    if n_r:
        ok &= ev.inst[rel] == h.inst[hold]
        ok &= ev.ts[rel] >= h.attempt_ts[hold]
        ok &= ev.task[rel] != h.task[hold]
    return rel[ok], hold[ok]


def _flows(ev, rp, tracks: _Tracks, pids, tids, t0) -> Iterator[pa.Array]:
    rel, hold = unblocks(ev, rp)
    if not len(rel):
        return
    h = rp.holds
    # The releaser's track: the overlap track when the released hold sits there.
    released_hold = np.full(len(ev), -1)
    done = np.flatnonzero(h.released)
    released_hold[h.end[done]] = done
    rh = released_hold[rel]
    over = (rh >= 0) & tracks.overlaps[np.maximum(rh, 0)]
    src_tid = tids[ev.task[rel]] + np.where(over, OVERLAP_TID, 0)
    src_start = np.where(rh >= 0, h.acquired_ts[np.maximum(rh, 0)], ev.ts[rel])
    src_ts = np.maximum(ev.ts[rel] - 1, src_start)  # inside the releaser's slice
    dur = h.released_ts[hold] - h.acquired_ts[hold]
    dst_ts = h.acquired_ts[hold] + np.minimum(dur, 1)  # inside the waiter's slice
    dst_tid = tids[h.task[hold]] + np.where(tracks.overlaps[hold], OVERLAP_TID, 0)
    ids = _num(np.arange(1, len(rel) + 1))
    for ph, ts, pid, tid, extra in (
        ("s", src_ts, pids[ev.task[rel]], src_tid, ""),
        ("f", dst_ts, pids[h.task[hold]], dst_tid, ',"bp":"e"'),
    ):
        yield _join(
            f'{{"ph":"{ph}","name":"unblocks","cat":"lock","id":',
            ids,
            *_place(ts - t0, pid, tid),
            extra + "}",
        )
