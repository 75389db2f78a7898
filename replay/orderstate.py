"""A replay state built from an :class:`~lktrace.replay.order.Order` instead of events.

The finders read a :class:`~lktrace.replay.state.ReplayState` by position:
events, holds, ordering pairs, graphs.  :class:`OrderState` gives them the
same state with only the events they can report: each ordering's two
witnesses, the attempts still pending, the holds still open, the deepest
nesting of each lock and call site, the releases of locks not held.  What
spans every occurrence (counts, tasks, gates, call paths, time histograms)
comes from the Order's tables.  So ``analyze`` and ``diff`` give the same
findings from a summary file as from the trace it summarises, and the state
of many traces is their Orders merged, whoever computed them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from lktrace.replay.arrays import run_starts, sort_rows, sorted_codes, stable_argsort
from lktrace.replay.events import ATTEMPT, RELEASED, Events
from lktrace.replay.graph import Graph, Pairs
from lktrace.replay.holds import Holds, Replay
from lktrace.replay.order import Order
from lktrace.replay.state import Filters, ReplayState
from lktrace.trace import SCHEMA, Trace, TraceMeta


class _Builder:
    """Collects synthetic events (by site) and holds, handing out their positions."""

    def __init__(self) -> None:
        self.ev: dict[str, list[np.ndarray]] = {k: [] for k in ("site", "ts", "task", "event")}
        self.n = 0

    def events(self, site, ts, task, event: int) -> np.ndarray:
        m = len(site)
        self.ev["site"].append(np.asarray(site, np.int64))
        self.ev["ts"].append(np.asarray(ts, np.int64))
        self.ev["task"].append(np.asarray(task, np.int64))
        self.ev["event"].append(np.full(m, event, np.int8))
        self.n += m
        return np.arange(self.n - m, self.n)

    def done(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in self.ev.items()}


class OrderState(ReplayState):
    """The replay state of an Order (see the module docstring)."""

    def __init__(self, order: Order, filters: Filters) -> None:
        self.filters = filters
        self.order = o = order
        site, rows = o["sites"], o["orderings"]
        b = _Builder()
        n_rows = o.size("orderings")
        has_other = np.flatnonzero(rows["other_task"] >= 0)
        # the events: witnesses, then pending attempts, open holds, nestings, releases
        first_att = b.events(rows["wanted"], rows["ts"], rows["task"], ATTEMPT)
        other_att = b.events(
            rows["wanted"][has_other],
            rows["other_ts"][has_other],
            rows["other_task"][has_other],
            ATTEMPT,
        )
        # one hold per site some ordering held: the held side of its witnesses
        held_sites, self._row_hold = sorted_codes(rows["held"])
        n_held = len(held_sites)
        held_at = b.events(held_sites, 0 * held_sites, 0 * held_sites, ATTEMPT)
        pend, op, ne, rel = (o[t] for t in ("pending", "open", "nesting", "releases"))
        pend_at = b.events(pend["site"], pend["ts"], pend["task"], ATTEMPT)
        open_at = b.events(op["site"], op["origin_ts"], op["task"], ATTEMPT)
        nest_at = b.events(ne["site"], ne["ts"], ne["task"], ATTEMPT)
        rel_at = b.events(rel["site"], rel["ts"], rel["task"], RELEASED)
        taken_at = b.events(
            o["taken"]["site"], np.zeros(o.size("taken")), 0 * o["taken"]["site"], 1
        )
        self._taken_at = taken_at
        e = b.done()
        s = e["site"]
        traces = [
            Trace(Path(t.path), SCHEMA.empty_table(), _with_stacks(t.meta, o.stacks))
            for t in o.traces
        ]
        tasks = o["tasks"]
        task_df = pd.DataFrame(
            {
                "file": tasks["file"].astype(np.int16),
                "tid": tasks["tid"].astype(np.int32),
                "pid": tasks["pid"].astype(np.int32),
                "comm": np.asarray(o.comms, object)[tasks["comm"]] if len(tasks["comm"]) else [],
            }
        )
        lock_name = o["locks"]["name"].astype(np.int32)
        events = Events(
            traces=traces,
            spans=[(t.events, t.first_ns, t.last_ns) for t in o.traces],
            file=site["file"][s].astype(np.int16),
            task=e["task"].astype(np.int32),
            ts=e["ts"],
            event=e["event"],
            blocking=np.isin(np.arange(len(s)), pend_at),
            inst=site["lock"][s].astype(np.int32),
            cls=site["cls"][s].astype(np.int32),
            name=lock_name[site["lock"][s]] if len(s) else s.astype(np.int32),
            caller=site["caller"][s].astype(np.int32),
            stack=site["stack"][s].astype(np.int32),
            classes=o.classes,
            names=o.names,
            callers=o.callers,
            tasks=task_df,
            inst_name=lock_name,
        )
        self.events = events
        file_end = np.array([t.last_ns for t in o.traces], np.int64)
        # the holds: one per held site of the orderings, open ones, nested ones
        hsite = np.r_[held_sites, op["site"], ne["site"]].astype(np.int64)
        n_open, n_nest = o.size("open"), o.size("nesting")
        origin = np.r_[held_at, open_at, nest_at]
        acquired = np.r_[np.zeros(n_held, np.int64), op["ts"], ne["ts"]]
        released_ts = np.r_[
            np.zeros(n_held, np.int64),
            file_end[site["file"][op["site"]]] if n_open else np.zeros(0, np.int64),
            ne["ts"],
        ]
        holds = Holds(
            task=np.r_[np.zeros(n_held, np.int64), op["task"], ne["task"]].astype(np.int32),
            inst=site["lock"][hsite].astype(np.int32),
            cls=site["cls"][hsite].astype(np.int32),
            start=origin,
            end=origin,
            released=np.r_[np.ones(n_held, bool), np.zeros(n_open, bool), np.ones(n_nest, bool)],
            attempt_ts=acquired,
            acquired_ts=acquired,
            released_ts=released_ts,
            depth=np.r_[np.ones(n_held, np.int64), op["depth"], ne["depth"]].astype(np.int32),
            origin=origin,
            before_start=np.zeros(len(hsite), bool),
            ask=origin,
        )
        depth_before = np.zeros(len(s), np.int32)
        depth_before[pend_at] = pend["depth"]
        self.replay = Replay(holds, depth_before, pend_at, rel_at, file_end)
        # the pairs: each ordering's witnesses, then (open hold, pending attempt) of a task
        open_hold = n_held + np.arange(n_open)
        dl_hold, dl_att = _deadlock_pairs(op, pend, pend_at, open_hold, site)
        hold = np.r_[self._row_hold, self._row_hold[has_other]].astype(np.int64)
        attempt = np.r_[first_att, other_att].astype(np.int64)
        # a deadlocked task's pair that is also a witness takes the witness's place
        rep = _witness_of(rows, has_other, op["site"][dl_hold - n_held], e, dl_att)
        hold[rep[rep >= 0]], attempt[rep[rep >= 0]] = dl_hold[rep >= 0], dl_att[rep >= 0]
        self._pairs = Pairs(
            hold=np.r_[hold, dl_hold[rep < 0]], attempt=np.r_[attempt, dl_att[rep < 0]]
        )
        self._rep_row = np.r_[np.arange(n_rows), has_other]  # ordering of each witness pair
        self.no_releases = [Path(t.path).name for t in o.traces if not t.releases]
        self.task_file = task_df["file"].to_numpy()
        self.task_tids = task_df["tid"].tolist()
        self.task_comms = task_df["comm"].tolist()

    # -- the state the finders read ------------------------------------------

    @cached_property
    def pairs(self) -> Pairs:
        return self._pairs

    @cached_property
    def _edges(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per level: each ordering's edge key (-1: none at that level), width, labels."""
        o, site, rows = self.order, self.order["sites"], self.order["orderings"]
        out = {}
        for level in self.filters.levels:
            if level == "class":
                src, dst = site["cls"][rows["held"]], site["cls"][rows["wanted"]]
                width = max(len(o.classes), 1)
                key = np.where(src != dst, src * width + dst, -1)
            else:
                src, dst = site["lock"][rows["held"]], site["lock"][rows["wanted"]]
                width = max(o.size("locks"), 1)
                key = src * width + dst
            out[level] = (key.astype(np.int64), width)
        return out

    @cached_property
    def _pair_order(self) -> np.ndarray:
        """The witness pairs in (ts, task) order, ties by position: sorted once for every
        level's graph, whose occurrences then sort by edge alone."""
        at = self.pairs.attempt[: len(self._rep_row)]
        ts, task = self.events.ts[at], self.events.task[at].astype(np.int64)
        if not len(at):
            return at
        ts = ts - ts.min()
        bits = int(task.max()).bit_length()
        top = int(ts.max()).bit_length() + bits
        if top <= 63:
            return stable_argsort(ts << bits | task, 1 << top)
        return sort_rows(ts, task)

    @cached_property
    def graphs(self) -> dict[str, Graph]:
        rows, o = self.order["orderings"], self.order
        graphs = {}
        for level, (key, width) in self._edges.items():
            labels = o.classes if level == "class" else [o.names[n] for n in self.events.inst_name]
            valid = key >= 0
            uniq, edge_of = sorted_codes(key[valid])
            edge = np.full(len(key), -1, np.int64)
            edge[valid] = edge_of
            count = np.bincount(edge_of, weights=rows["count"][valid], minlength=len(uniq))
            # the stored occurrences: both witnesses of every ordering, in time order
            t = self._pair_order
            p = t[edge[self._rep_row[t]] >= 0]
            rep_edge = edge[self._rep_row[p]]
            stored = np.bincount(rep_edge, minlength=len(uniq))
            graphs[level] = Graph(
                level=level,
                labels=labels,
                src=uniq // width,
                dst=uniq % width,
                occurrences=p[stable_argsort(rep_edge, len(uniq))],
                first=np.r_[0, np.cumsum(stored)[:-1]].astype(np.int64) if len(uniq) else stored,
                count=count.astype(np.int64),
                stored=stored,
            )
        return graphs

    def _edge_rows(self, graph: Graph, edge: int) -> np.ndarray:
        """The orderings whose edge at the graph's level is ``edge``."""
        key, width = self._edges[graph.level]
        return np.flatnonzero(key == graph.src[edge] * width + graph.dst[edge])

    def gates(self, graph: Graph, edge: int) -> set[int]:
        g = self.order["gates"]
        rows = self._edge_rows(graph, edge)
        at = np.isin(g["ordering"], rows)
        locks, n = g["lock"][at], g["n"][at]
        total = int(graph.count[edge])
        sums = pd.Series(n).groupby(locks).sum() if len(locks) else pd.Series(dtype=np.int64)
        return {int(k) for k, v in sums.items() if v == total}

    def edge_tasks(self, graph: Graph, edge: int) -> set[int]:
        rows = self._edge_rows(graph, edge)
        r, extra = self.order["orderings"], self.order["ordering_tasks"]
        found = set(r["task"][rows].tolist()) | set(r["other_task"][rows].tolist())
        found |= set(extra["task"][np.isin(extra["ordering"], rows)].tolist())
        found.discard(-1)
        return found

    def release_owners(self) -> tuple[dict[int, int], set[int]]:
        rel = self.order["releases"]
        at = self.replay.excess
        owner = {
            int(p): int(t) for p, t, k in zip(at, rel["owner"], rel["kind"], strict=True) if k == 0
        }
        return owner, {int(p) for p, k in zip(at, rel["kind"], strict=True) if k == 1}

    def counts(self) -> dict[str, int]:
        return {
            "events": sum(t.events for t in self.order.traces),
            "tasks": self.order.size("tasks"),
            "locks": self.order.size("locks"),
            "classes": len(np.unique(self.order["classes_taken"]["cls"])),
        }

    def inst_classes(self) -> np.ndarray:
        site = self.order["sites"]
        out = np.zeros(self.order.size("locks"), np.int64)
        taken = self.order["taken"]["site"]  # classes locks were taken as, else any
        for pick in (np.arange(len(site["lock"])), taken):
            out[site["lock"][pick]] = site["cls"][pick]
        return out

    def taken(self) -> np.ndarray:
        site = self.order["sites"]
        t = self.order["taken"]["site"]
        paths = self.paths.at(self._taken_at)
        return np.unique(np.c_[site["cls"][t], site["lock"][t], paths].astype(np.int64), axis=0)

    def ordering_paths(self, graph: Graph) -> tuple[np.ndarray, ...]:
        rows = self.order["orderings"]
        key, width = self._edges[graph.level]
        valid = np.flatnonzero(key >= 0)
        edge = np.searchsorted(graph.src * width + graph.dst, key[valid])
        path = self.hold_paths[self._row_hold[valid]]
        # per (edge, path): the earliest (ts, task) ordering, and the counts summed
        order = sort_rows(edge, path, rows["ts"][valid], rows["task"][valid])
        e, p = edge[order], path[order]
        starts = run_starts(e, p)
        count = np.add.reduceat(rows["count"][valid][order], starts) if len(e) else e
        return e[starts], p[starts], valid[order[starts]], count

    def timing(self) -> dict[str, np.ndarray]:
        return self.order["timing"]


def _with_stacks(meta: TraceMeta, stacks: list[list[str]]) -> TraceMeta:
    """``meta`` with the Order's stack table, which the sites' stack ids index."""
    return TraceMeta(**{**meta.__dict__, "stacks": stacks})


def _witness_of(rows, has_other, held_site, e, att) -> np.ndarray:
    """For each (held site, attempt event): the witness pair it is, or -1."""
    r = _row_of(
        rows["held"] << 32 | rows["wanted"], held_site.astype(np.int64) << 32 | e["site"][att]
    )
    ok = r >= 0
    rr = np.maximum(r, 0)
    ts, task = e["ts"][att], e["task"][att]
    first = ok & (rows["ts"][rr] == ts) & (rows["task"][rr] == task)
    k = np.searchsorted(has_other, rr)
    padded = np.r_[has_other, -1]
    other = ok & (padded[k] == rr) & (rows["other_ts"][rr] == ts) & (rows["other_task"][rr] == task)
    return np.where(first, rr, np.where(other, len(rows["held"]) + k, -1))


def _row_of(keys: np.ndarray, want: np.ndarray) -> np.ndarray:
    """The row of each ``want`` among the distinct ``keys``, -1 where absent: one pass
    over the keys against the few wanted, sorted (no hash table of every key)."""
    u, inv = np.unique(want, return_inverse=True)
    row = np.full(len(u), -1, np.int64)
    if len(u):
        at = np.minimum(np.searchsorted(u, keys), len(u) - 1)
        hit = np.flatnonzero(u[at] == keys)
        row[at[hit]] = hit
    return row[inv.ravel()]


def _deadlock_pairs(op, pend, pend_at, open_hold, site) -> tuple[np.ndarray, np.ndarray]:
    """(open hold, pending attempt) of the same task on another lock, the attempt not nested."""
    if not len(pend_at) or not len(open_hold):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    df = pd.DataFrame({"task": op["task"], "hold": open_hold, "hl": site["lock"][op["site"]]})
    pf = pd.DataFrame(
        {"task": pend["task"], "att": pend_at, "al": site["lock"][pend["site"]], "d": pend["depth"]}
    )
    m = pf[pf["d"] == 0].merge(df, on="task")
    m = m[m["hl"] != m["al"]]
    return m["hold"].to_numpy(np.int64), m["att"].to_numpy(np.int64)
