"""Pair each task's acquisitions with its releases: hold intervals, depths, waits.

Works per (task, lock instance) sequence, vectorised.  The task's depth on a
lock is the running count of ``acquired`` (+1) and ``released`` (-1), floored
at zero: a release that would take it below zero is *excess* (the task did
not hold the lock: held before the trace began, released by a non-owner, or
unbalanced).  A matched release closes the latest open acquisition at its
depth, so nested (reentrant) holds pair up like brackets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lktrace.replay.arrays import run_starts, sort_rows, stable_argsort
from lktrace.replay.events import (
    ACQUIRED,
    ATTEMPT,
    FAILED,
    RELEASED,
    Events,
    Piece,
)


@dataclass
class Holds:
    """Hold intervals, one per granted acquisition or lock held from before the trace.

    Positions index the task-ordered :class:`Events`; ``end`` is the position of
    the release, or one past the task's last event when the lock stays held.
    """

    task: np.ndarray
    inst: np.ndarray
    cls: np.ndarray
    start: np.ndarray  # position of the acquired event (or the task's first event - 1)
    end: np.ndarray
    released: np.ndarray  # bool
    attempt_ts: np.ndarray  # when the task asked for it (== acquired_ts if unknown)
    acquired_ts: np.ndarray
    released_ts: np.ndarray  # trace end of the task's file when still held
    depth: np.ndarray  # 1 for a plain hold, 2+ nested in itself
    origin: np.ndarray  # event position whose stack shows where it was taken (-1: unknown)
    before_start: np.ndarray  # bool: held when the trace began
    ask: np.ndarray  # position of the attempt that asked for it (the acquisition's if none; -1)


@dataclass
class Seen:
    """What the slices replayed before the current one leave for it (one trace)."""

    first_acq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per instance
    released: set[tuple[int, int]] = field(default_factory=set)  # (task, lock) released unheld


@dataclass
class Replay:
    """What pairing found: the holds and the events that pair with nothing."""

    holds: Holds
    depth_before: np.ndarray  # per event: the task's depth on that lock before the event
    pending: np.ndarray  # positions of blocking attempts never granted (task blocked at end)
    excess: np.ndarray  # positions of releases of a lock the task did not hold
    file_end_ts: np.ndarray  # per file: last timestamp


def pair(ev: Events | Piece, seen: Seen | None = None) -> Replay:
    """Replay ``ev`` into hold intervals and the unmatched events.

    ``seen`` carries, from one slice of a trace to the next, when each lock
    was first acquired and which locks a task released without holding.

    Works on a copy of the events in (task, lock, time) order: positions in
    that order are "group" positions, ``g_order`` maps them back.  Full-length
    temporaries are narrow and freed early; 10 M events stay well under 2 GB.
    """
    n = len(ev)
    n_inst = max(ev.n_inst, 1)
    groups = max(ev.n_task, 1) * n_inst
    key = ev.task.astype(np.int32 if groups < 1 << 31 else np.int64) * n_inst + ev.inst
    if groups <= 1 << 16:  # (task, lock, time) order: one radix pass
        g_order = stable_argsort(key, groups).astype(np.int32)
    else:  # by lock, then by task (faster than by the low and high bits of both)
        by_inst = stable_argsort(ev.inst, n_inst)
        g_order = by_inst[stable_argsort(ev.task[by_inst], ev.n_task)].astype(np.int32)
        del by_inst
    key = key[g_order]
    gstart = np.ones(n, bool)  # another task or lock than the event before
    np.not_equal(key[1:], key[:-1], out=gstart[1:])
    del key
    gid = np.cumsum(gstart, dtype=np.int32) - 1
    e = ev.event[g_order]

    x = (e == ACQUIRED).astype(np.int8) - (e == RELEASED)
    run = np.cumsum(x, dtype=np.int32)
    run -= (run - x)[gstart][gid]  # running count within the group
    # Per-group running minimum, floored at zero: shifting each group far
    # below the previous one keeps a group's minimum from leaking into the next.
    low = gid.astype(np.int64) * (2 * (n + 1))
    low = np.subtract(run, low, out=low)
    np.minimum.accumulate(low, out=low)
    low += gid.astype(np.int64) * (2 * (n + 1))
    low = np.minimum(low, 0).astype(np.int32)
    depth = run - low  # the task's depth on the lock after each event
    del run
    low_before = np.empty_like(low)
    low_before[1:] = low[:-1]
    low_before[gstart] = 0
    excess = (x == -1) & (low < low_before)  # took the floor lower: not held
    del low, low_before
    matched = (x == -1) & ~excess
    depth_before = np.empty(n, np.int32)
    depth_before[g_order] = depth - np.where(excess, 0, x)  # excess: no change

    # A matched release closes the open acquisition at its level, bracket-style:
    # in (group, level, position) order, which is position order when no lock is
    # taken twice over (groups follow each other by position).
    both = np.flatnonzero((x == 1) | matched)
    is_acq = x[both] == 1
    del x, matched
    level = depth[both] + ~is_acq
    if len(level) and level.max() > 1:
        srt = sort_rows(gid[both], level, both)
        both, level, is_acq = both[srt], level[srt], is_acq[srt]
        del srt
    nxt_same = np.r_[(gid[both[1:]] == gid[both[:-1]]) & (level[1:] == level[:-1]), False]
    closes = is_acq & nxt_same & np.r_[~is_acq[1:], False]
    a_idx = both[is_acq]
    r_idx = np.where(closes[is_acq], np.r_[both[1:], 0][is_acq], -1)
    del both, level, is_acq, nxt_same, closes, gid

    # The attempt just before an acquisition (same task and lock) says where it was asked for.
    asked = (a_idx > 0) & ~gstart[a_idx]
    asked[asked] = e[a_idx[asked] - 1] == ATTEMPT
    pos_a = g_order[a_idx]
    pos_ask = g_order[np.where(asked, a_idx - 1, a_idx)]
    origin = np.where(ev.stack[pos_a] >= 0, pos_a, pos_ask)
    held = r_idx >= 0
    pos_r = g_order[np.maximum(r_idx, 0)]
    acq_depth = depth[a_idx]
    del depth, a_idx, r_idx, asked

    task_last = _task_last(ev)
    file_end_ts = _file_end(ev, task_last)
    tsk = ev.task[pos_a]
    end = np.where(held, pos_r, task_last[tsk] + 1)

    # Locks released before any acquisition of them in the trace were held when it began.
    exc_pos = np.sort(g_order[excess])
    first_acq = _first_per(ev.inst[pos_a], ev.ts[pos_a], n_inst)
    if seen is not None:
        before = seen.first_acq[: len(first_acq)]
        first_acq[: len(before)] = np.minimum(first_acq[: len(before)], before)
        seen.first_acq = first_acq
    early = ev.ts[exc_pos] < first_acq[ev.inst[exc_pos]]
    pre = exc_pos[early & _first_release(ev, exc_pos, seen)]
    task_first = np.r_[0, task_last[:-1] + 1] if len(task_last) else task_last

    holds = Holds(
        task=np.r_[tsk, ev.task[pre]],
        inst=np.r_[ev.inst[pos_a], ev.inst[pre]],
        cls=np.r_[ev.cls[pos_a], ev.cls[pre]],
        start=np.r_[pos_a, task_first[ev.task[pre]] - 1],
        end=np.r_[end, pre],
        released=np.r_[held, np.ones(len(pre), bool)],
        attempt_ts=np.r_[ev.ts[pos_ask], ev.ts[pre]],
        acquired_ts=np.r_[ev.ts[pos_a], ev.ts[pre]],
        released_ts=np.r_[np.where(held, ev.ts[pos_r], file_end_ts[ev.file[pos_a]]), ev.ts[pre]],
        depth=np.r_[acq_depth, np.ones(len(pre), np.int32)],
        origin=np.r_[origin, np.full(len(pre), -1)],
        before_start=np.r_[np.zeros(len(pos_a), bool), np.ones(len(pre), bool)],
        ask=np.r_[pos_ask, np.full(len(pre), -1)],
    )

    # A blocking attempt never granted, and the task's last event: it is still waiting.
    granted = np.r_[((e[1:] == ACQUIRED) | (e[1:] == FAILED)) & ~gstart[1:], False]
    waiting = g_order[(e == ATTEMPT) & ~granted]
    waiting = waiting[ev.blocking[waiting] & (waiting == task_last[ev.task[waiting]])]
    return Replay(holds, depth_before, np.sort(waiting), exc_pos, file_end_ts)


def _task_last(ev: Events | Piece) -> np.ndarray:
    """Per task, the position of its last event (events are task-ordered)."""
    if not len(ev):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[ev.task[1:] != ev.task[:-1], True])


def _file_end(ev: Events | Piece, task_last: np.ndarray) -> np.ndarray:
    """Per file, its last timestamp: the latest of its tasks' last events."""
    end = np.full(ev.n_file, np.iinfo(np.int64).min)
    np.maximum.at(end, ev.file[task_last], ev.ts[task_last])
    return end


def _first_per(inst: np.ndarray, ts: np.ndarray, n_inst: int) -> np.ndarray:
    """Per instance, the earliest of ``ts`` (the int64 maximum where it has none)."""
    out = np.full(n_inst, np.iinfo(np.int64).max)
    if len(inst):
        order = stable_argsort(inst, n_inst)
        s = inst[order]
        start = run_starts(s)
        out[s[start]] = np.minimum.reduceat(ts[order], start)
    return out


def _first_release(ev: Events | Piece, positions: np.ndarray, seen: Seen | None) -> np.ndarray:
    """Whether each excess release is its task's first on that lock."""
    key = ev.task[positions].astype(np.int64) * ev.n_inst + ev.inst[positions]
    _, first = np.unique(key, return_index=True)
    out = np.zeros(len(positions), bool)
    out[first] = True
    if seen is not None and len(positions):
        pairs = zip(ev.task[positions].tolist(), ev.inst[positions].tolist(), strict=True)
        for i, p in enumerate(pairs):
            if p in seen.released:
                out[i] = False
            seen.released.add(p)
    return out
