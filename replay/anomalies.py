"""Reentrancy, depth and balance anomalies: one task's trouble with one lock."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lktrace.console import fmt_ns
from lktrace.replay.findings import ANOMALY_KINDS, Anomaly
from lktrace.replay.state import ReplayState


def find_anomalies(state: ReplayState, max_depth: int) -> list[Anomaly]:
    """Self-deadlocks, nesting above ``max_depth``, foreign and unbalanced releases,
    reentrancy, locks held at the end; most severe first."""
    if state.no_releases:  # without releases every acquisition looks nested and held
        return []
    found = _self_deadlocks(state) + _reentrancy(state, max_depth) + _excess_releases(state)
    found += _held_at_end(state)
    rank = {k: i for i, k in enumerate(ANOMALY_KINDS)}
    return sorted(found, key=lambda a: (rank[a.kind], a.ts_ns))


def _anomaly(state: ReplayState, kind: str, pos: int, depth: int, detail: str) -> Anomaly:
    tid, comm = state.task(int(state.events.task[pos]))
    ref = state.attempt_ref(pos)
    return Anomaly(
        kind,
        ref.lock_class,
        ref.lock_name,
        tid,
        comm,
        ref.since_ns,
        depth,
        ref.stack,
        state.file_name(pos),
        detail,
    )


def _where_taken(state: ReplayState, hold: int) -> int:
    h = state.holds
    return int(h.origin[hold]) if h.origin[hold] >= 0 else int(h.start[hold])


def _self_deadlocks(state: ReplayState) -> list[Anomaly]:
    rp = state.replay
    out = []
    for pos in rp.pending[rp.depth_before[rp.pending] > 0].tolist():
        depth = int(rp.depth_before[pos]) + 1
        detail = f"waits for a lock it already holds (depth {depth - 1}); never granted"
        out.append(_anomaly(state, "self_deadlock", pos, depth, detail))
    return out


def _reentrancy(state: ReplayState, max_depth: int) -> list[Anomaly]:
    h = state.holds
    nested = np.flatnonzero(h.depth >= 2)
    if not len(nested):
        return []
    df = pd.DataFrame(
        {"i": nested, "task": h.task[nested], "inst": h.inst[nested], "depth": h.depth[nested]}
    )
    deepest = df.sort_values(["depth", "i"], ascending=[False, True]).drop_duplicates(
        ["task", "inst"]
    )
    out = []
    for i, depth in zip(deepest["i"].tolist(), deepest["depth"].tolist(), strict=True):
        kind = "depth_exceeded" if depth > max_depth else "reentrant"
        detail = f"nested to depth {depth}" + (
            f", above --max-depth {max_depth}"
            if kind == "depth_exceeded"
            else "; the lock was granted again to its owner"
        )
        out.append(_anomaly(state, kind, _where_taken(state, i), depth, detail))
    return out


def _excess_releases(state: ReplayState) -> list[Anomaly]:
    ev, h = state.events, state.holds
    exc = state.replay.excess
    if not len(exc):
        return []
    pre = set(h.end[h.before_start].tolist())
    holds = pd.DataFrame(
        {
            "file": state.task_file[h.task],
            "inst": h.inst,
            "task": h.task,
            "acq": h.acquired_ts,
            "rel": h.released_ts,
            "before": h.before_start,
        }
    )
    holds = holds[~holds["before"]]
    rel = pd.DataFrame(
        {
            "pos": exc,
            "file": ev.file[exc],
            "inst": ev.inst[exc],
            "rtask": ev.task[exc],
            "ts": ev.ts[exc],
        }
    )
    m = rel.merge(holds, on=["file", "inst"])
    m = m[(m["acq"] <= m["ts"]) & (m["ts"] <= m["rel"]) & (m["task"] != m["rtask"])]
    owner = dict(zip(m["pos"], m["task"], strict=False))
    out = []
    for pos in exc.tolist():
        if pos in owner:
            tid, comm = state.task(int(owner[pos]))
            detail = f"released while {comm}/{tid} holds it"
            out.append(_anomaly(state, "foreign_release", pos, 0, detail))
        elif pos in pre:
            detail = "released before any acquisition: held when the trace began"
            out.append(_anomaly(state, "held_before_start", pos, 1, detail))
        else:
            detail = "released while no task holds it"
            out.append(_anomaly(state, "unbalanced_release", pos, 0, detail))
    return out


def _held_at_end(state: ReplayState) -> list[Anomaly]:
    h = state.holds
    out = []
    for i in state.held_at_end.tolist():
        if int(h.task[i]) in state.blocked_tasks:
            continue
        held_for = int(h.released_ts[i] - h.acquired_ts[i])
        detail = f"still held when the trace ended, for {fmt_ns(held_for)}"
        out.append(_anomaly(state, "held_at_end", _where_taken(state, i), 1, detail))
    return out
