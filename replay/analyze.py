"""Turn traces into findings: deadlocks that happened, inversions, anomalies.

The pipeline: :func:`load_events` (sort and encode), :func:`pair` (hold
intervals), :func:`ordering_pairs` and :func:`build_graph` (the ordering
graphs), then the finders below, which only look at the few places the
vectorised passes point them to.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.console import fmt_ns
from lktrace.replay.cycles import shortest_cycles, simple_cycles
from lktrace.replay.events import RELEASED, Events, load_events
from lktrace.replay.findings import (
    ANOMALY_KINDS,
    Analysis,
    Anomaly,
    BlockedTask,
    Deadlock,
    Inversion,
    LockRef,
    Witness,
)
from lktrace.replay.graph import Graph, Pairs, build_graph, expand_ranges, ordering_pairs
from lktrace.replay.holds import Replay, pair
from lktrace.trace import Trace, frame_symbol

LEVELS = ("class", "instance", "both")


@dataclass
class Options:
    """What to analyse and how."""

    level: str = "both"
    max_depth: int = 2
    max_cycles: int = 200
    classes: set[str] = field(default_factory=set)  # report only findings on these classes
    comms: set[str] = field(default_factory=set)
    tids: set[int] = field(default_factory=set)
    since_s: float | None = None  # seconds from each trace's first event
    until_s: float | None = None


def select(trace: Trace, opts: Options) -> Trace:
    """``trace`` restricted to the tasks and the time window of ``opts``."""
    t = trace.table
    masks = []
    if opts.comms:
        masks.append(pc.is_in(t["comm"].cast(pa.string()), pa.array(sorted(opts.comms))))
    if opts.tids:
        masks.append(pc.is_in(t["tid"], pa.array(sorted(opts.tids), pa.int32())))
    if t.num_rows:
        first = pc.min(t["ts_ns"]).as_py()
        if opts.since_s is not None:
            masks.append(pc.greater_equal(t["ts_ns"], first + int(opts.since_s * 1e9)))
        if opts.until_s is not None:
            masks.append(pc.less(t["ts_ns"], first + int(opts.until_s * 1e9)))
    if not masks:
        return trace
    return Trace(trace.path, t.filter(functools.reduce(pc.and_, masks)), trace.meta)


def analyze(
    traces: Iterable[Trace], opts: Options | None = None, drop_tables: bool = False
) -> Analysis:
    """Analyse one trace, or several as one merged graph.

    ``drop_tables`` empties each trace's table once read: with a generator of
    traces, only one file's table is in memory at a time.
    """
    opts = opts or Options()
    return Run((select(t, opts) for t in traces), opts, drop_tables).analysis()


class Run:
    """One analysis: the replayed state and the finders that read it."""

    def __init__(self, traces: Iterable[Trace], opts: Options, drop_tables: bool = False) -> None:
        self.opts = opts
        self.ev: Events = load_events(traces, drop_tables)
        self.no_releases = [
            t.path.name for t in self.ev.traces if t.meta.extra.get("releases") == "no"
        ]
        self.rp: Replay = pair(self.ev)
        if self.no_releases:  # held sets and depths are unknown without release events
            none = np.zeros(0, np.int64)
            self.pairs: Pairs = Pairs(none, none)
        else:
            self.pairs = ordering_pairs(self.ev, self.rp.holds, self.rp.depth_before)
        levels = ("class", "instance") if opts.level == "both" else (opts.level,)
        with ThreadPoolExecutor(len(levels)) as pool:  # numpy sorts release the GIL
            built = {
                lv: pool.submit(build_graph, self.ev, self.rp.holds, self.pairs, lv)
                for lv in levels
            }
            self.graphs = {lv: f.result() for lv, f in built.items()}
        self._gates: dict[tuple[str, int], set[int]] = {}
        self.task_file = self.ev.tasks["file"].to_numpy()
        self._tids = self.ev.tasks["tid"].tolist()
        self._comms = self.ev.tasks["comm"].tolist()
        self.notes: list[str] = []

    # -- building blocks --------------------------------------------------

    @cached_property
    def _pairs_by_attempt(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.pairs.attempt, kind="stable")
        return order, self.pairs.attempt[order]

    def _file(self, pos: int) -> str:
        return str(self.ev.traces[self.ev.file[pos]].path)

    def _task(self, task: int) -> tuple[int, str]:
        return self._tids[task], self._comms[task]

    def _lock_ref(self, hold: int) -> LockRef:
        h, ev = self.rp.holds, self.ev
        origin = int(h.origin[hold])
        return LockRef(
            lock_class=ev.classes[h.cls[hold]],
            lock_name=ev.names[ev.inst_name[h.inst[hold]]],
            since_ns=int(h.acquired_ts[hold]),
            caller=ev.callers[ev.caller[origin]] if origin >= 0 else "",
            stack=ev.stack_frames(origin) if origin >= 0 else [],
        )

    def _attempt_ref(self, pos: int) -> LockRef:
        ev = self.ev
        return LockRef(
            lock_class=ev.classes[ev.cls[pos]],
            lock_name=ev.names[ev.name[pos]],
            since_ns=int(ev.ts[pos]),
            caller=ev.callers[ev.caller[pos]],
            stack=ev.stack_frames(pos),
        )

    def witness(self, graph: Graph, pair_idx: int) -> Witness:
        """The :class:`Witness` of one ordering pair."""
        hold, pos = int(self.pairs.hold[pair_idx]), int(self.pairs.attempt[pair_idx])
        held = self._lock_ref(hold)
        want = self._attempt_ref(pos)
        node = self._edge_nodes(graph, pair_idx)
        tid, comm = self._task(int(self.ev.task[pos]))
        return Witness(
            src=graph.labels[node[0]],
            dst=graph.labels[node[1]],
            src_class=held.lock_class,
            dst_class=want.lock_class,
            src_name=held.lock_name,
            dst_name=want.lock_name,
            tid=tid,
            comm=comm,
            ts_ns=want.since_ns,
            caller=want.caller,
            held_caller=held.caller,
            stack=want.stack,
            held_stack=held.stack,
            file=self._file(pos),
        )

    def gates(self, graph: Graph, edge: int) -> set[int]:
        """Instances held at every occurrence of ``edge``, besides the edge's own locks."""
        key = (graph.level, edge)
        if key not in self._gates:
            occ = graph.edge_occurrences(edge)
            order, sorted_att = self._pairs_by_attempt
            att = self.pairs.attempt[occ]
            which, at = expand_ranges(
                np.searchsorted(sorted_att, att, "left"), np.searchsorted(sorted_att, att, "right")
            )
            held = self.rp.holds.inst[self.pairs.hold[order[at]]]
            own = self.rp.holds.inst[self.pairs.hold[occ]][which]
            other = held != own
            pairs = np.unique(np.c_[which[other], held[other]], axis=0)
            insts, n = np.unique(pairs[:, 1], return_counts=True) if len(pairs) else ([], [])
            self._gates[key] = {int(i) for i, c in zip(insts, n, strict=True) if c == len(occ)}
        return self._gates[key]

    def paths(self, graph: Graph, edge: int, limit: int = 8) -> list[int]:
        """Occurrences of ``edge`` that took it along different call paths (first of each).

        A path is the symbols of both stacks without offsets, or the two call
        sites where stacks were not recorded.
        """
        occ = graph.edge_occurrences(edge)
        ev = self.ev
        att = self.pairs.attempt[occ]
        origin = self.rp.holds.origin[self.pairs.hold[occ]]
        held = np.where(origin >= 0, ev.stack[np.maximum(origin, 0)], -1)
        key = np.c_[ev.file[att], ev.stack[att], held, ev.caller[att]]
        _, first = np.unique(key, axis=0, return_index=True)
        found: dict[tuple, int] = {}
        for i in np.sort(first).tolist():
            p = int(occ[i])
            w = self.witness(graph, p)
            sig = (_symbols(w.held_stack) or (w.held_caller,), _symbols(w.stack) or (w.caller,))
            found.setdefault(sig, p)
            if len(found) == limit:
                break
        return list(found.values())

    # -- finders ----------------------------------------------------------

    def deadlocks(self) -> tuple[list[Deadlock], list[tuple[int, int]]]:
        """Cycles of waiting tasks; also each blocked task's (held hold, pending attempt)."""
        h, ev = self.rp.holds, self.ev
        open_holds = np.flatnonzero(~h.released)
        holder = {  # the latest open hold of each lock
            (int(self.task_file[h.task[i]]), int(h.inst[i])): int(i)
            for i in open_holds[np.argsort(h.acquired_ts[open_holds], kind="stable")]
        }
        waiting = {int(ev.task[p]): int(p) for p in self.rp.pending}
        waits_on: dict[int, int] = {}
        for task, pos in waiting.items():
            hold = holder.get((int(ev.file[pos]), int(ev.inst[pos])))
            if hold is not None:  # its own hold too: a task that waits for itself
                waits_on[task] = int(h.task[hold])
        found: list[Deadlock] = []
        links: list[tuple[int, int]] = []
        seen: set[int] = set()
        for start in waits_on:
            path: list[int] = []
            t = start
            while t in waits_on and t not in seen and t not in path:
                path.append(t)
                t = waits_on[t]
            seen.update(path)
            if t not in path:
                continue
            cycle = path[path.index(t) :]
            tasks = []
            for i, task in enumerate(cycle):
                pos = waiting[task]
                mine = [int(x) for x in open_holds if h.task[x] == task]
                tid, comm = self._task(task)
                tasks.append(
                    BlockedTask(
                        tid=tid,
                        comm=comm,
                        file=self._file(pos),
                        waits_for=self._attempt_ref(pos),
                        holds=[self._lock_ref(x) for x in mine],
                        waits_on_tid=self._task(cycle[(i + 1) % len(cycle)])[0],
                    )
                )
                # the lock this task holds that the previous task in the cycle waits for
                prev = waiting[cycle[i - 1]]
                held = holder[(int(ev.file[prev]), int(ev.inst[prev]))]
                links.append((int(held), pos))
            found.append(Deadlock(tasks))
        return found, links

    def inversions(self, graph: Graph, links: list[tuple[int, int]]) -> list[Inversion]:
        """Every elementary cycle of ``graph``, with witnesses; the guarded ones carry a gate."""
        index = graph.index()
        prefer = {}  # edge -> the pair a deadlocked task made on it
        stuck = np.flatnonzero(np.isin(self.pairs.attempt, [p for _, p in links]))
        pair_of = {(int(self.pairs.hold[i]), int(self.pairs.attempt[i])): int(i) for i in stuck}
        deadlocked_edges: set[int] = set()
        for hold, pos in links:
            p = pair_of.get((hold, pos))
            if p is None:
                continue
            e = index.get(self._edge_nodes(graph, p))
            if e is not None:
                prefer[e] = p
                deadlocked_edges.add(e)
        adj, limit = graph.adjacency(), self.opts.max_cycles
        cycles, cut = simple_cycles(adj, limit)
        if cut:  # too many to list: the shortest cycle through each edge, rarest edges first
            rare = np.argsort(graph.count, kind="stable")
            pairs = zip(graph.src[rare].tolist(), graph.dst[rare].tolist(), strict=True)
            cycles, cut = shortest_cycles(adj, pairs, limit)
            self.notes.append(
                f"{graph.level} graph has more than {limit} elementary cycles (--max-cycles): "
                "showing the shortest cycle through each edge, rarest edges first"
                + (f", the first {limit}" if cut else "")
            )
        found = []
        for nodes in cycles:
            first = min(range(len(nodes)), key=lambda i: graph.labels[nodes[i]])
            nodes = nodes[first:] + nodes[:first]  # start at the smallest label: stable output
            edges = [index[(nodes[i], nodes[(i + 1) % len(nodes)])] for i in range(len(nodes))]
            if (
                graph.level == "instance"
                and self.opts.level == "both"
                and not any(self._same_class(graph, e) for e in edges)
            ):
                continue  # the class graph reports it
            found.append(self._inversion(graph, nodes, edges, prefer, deadlocked_edges))
        return found

    def _edge_nodes(self, graph: Graph, p: int) -> tuple[int, int]:
        hold, pos = self.pairs.hold[p], self.pairs.attempt[p]
        if graph.level == "class":
            return int(self.rp.holds.cls[hold]), int(self.ev.cls[pos])
        return int(self.rp.holds.inst[hold]), int(self.ev.inst[pos])

    def _same_class(self, graph: Graph, edge: int) -> bool:
        p = graph.edge_occurrences(edge)[0]
        return self.rp.holds.cls[self.pairs.hold[p]] == self.ev.cls[self.pairs.attempt[p]]

    def _inversion(
        self, graph: Graph, nodes: list[int], edges: list[int], prefer: dict, deadlocked: set
    ) -> Inversion:
        chosen: list[int] = []
        tasks: set[int] = set()
        chain = self._instance_chain(graph, edges) if graph.level == "class" else None
        for i, e in enumerate(edges):
            occ = graph.edge_occurrences(e)
            occ_tasks = self.ev.task[self.pairs.attempt[occ]]
            tasks.update(np.unique(occ_tasks).tolist())
            if e in prefer or chain:
                chosen.append(prefer.get(e, chain[i] if chain else -1))
                continue
            # prefer a task other than the previous witness's, as two CPUs would be
            other = (
                occ[occ_tasks != self.ev.task[self.pairs.attempt[chosen[-1]]]] if chosen else occ
            )
            chosen.append(int(other[0] if len(other) else occ[0]))
        gate = set.intersection(*(self.gates(graph, e) for e in edges))
        witnesses = [self.witness(graph, p) for p in chosen]
        return Inversion(
            level=graph.level,
            cycle=[graph.labels[n] for n in nodes],
            edges=witnesses,
            paths=[
                [w, *(self.witness(graph, p) for p in self.paths(graph, e) if p != c)]
                for w, e, c in zip(witnesses, edges, chosen, strict=True)
            ],
            same_task=len(tasks) == 1,
            same_instances=graph.level == "instance" or chain is not None,
            tasks=[
                dict(zip(("tid", "comm"), self._task(t), strict=True))
                for t in sorted(tasks, key=lambda t: (self.task_file[t], self._task(t)))
            ],
            deadlocked=bool(edges) and all(e in deadlocked for e in edges),
            gate=", ".join(sorted(self.ev.names[self.ev.inst_name[g]] for g in gate)) or None,
        )

    def _instance_chain(self, graph: Graph, edges: list[int], cap: int = 100_000) -> list | None:
        """For a class cycle, one occurrence per edge such that the instances close a cycle too.

        Lock A's class then B's, B's then A's, on the very same two locks is the
        inversion to show; ``None`` when no such chain exists (or the search
        grows past ``cap`` rows).
        """
        chain = None
        for i, e in enumerate(edges):
            occ = graph.edge_occurrences(e)
            step = pd.DataFrame(
                {
                    f"i{i}": self.rp.holds.inst[self.pairs.hold[occ]],
                    f"i{i + 1}": self.ev.inst[self.pairs.attempt[occ]],
                    f"p{i}": occ,
                }
            ).drop_duplicates([f"i{i}", f"i{i + 1}"])  # the first (earliest) of each pair
            chain = step if chain is None else chain.merge(step, on=f"i{i}")
            if len(chain) > cap or chain.empty:
                return None
        closed = chain[chain["i0"] == chain[f"i{len(edges)}"]]
        if closed.empty:
            return None
        row = closed.iloc[0]
        return [int(row[f"p{i}"]) for i in range(len(edges))]

    def anomalies(self, blocked_tasks: set[int]) -> list[Anomaly]:
        """Reentrancy, depth and balance problems, most severe first."""
        if self.no_releases:  # without releases every acquisition looks nested and held
            return []
        found = self._self_deadlocks() + self._reentrancy() + self._excess_releases()
        found += self._held_at_end(blocked_tasks)
        rank = {k: i for i, k in enumerate(ANOMALY_KINDS)}
        return sorted(found, key=lambda a: (rank[a.kind], a.ts_ns))

    def _anomaly(self, kind: str, pos: int, depth: int, detail: str) -> Anomaly:
        tid, comm = self._task(int(self.ev.task[pos]))
        ref = self._attempt_ref(pos)
        return Anomaly(
            kind,
            ref.lock_class,
            ref.lock_name,
            tid,
            comm,
            ref.since_ns,
            depth,
            ref.stack,
            self._file(pos),
            detail,
        )

    def _self_deadlocks(self) -> list[Anomaly]:
        out = []
        for pos in self.rp.pending[self.rp.depth_before[self.rp.pending] > 0]:
            depth = int(self.rp.depth_before[pos]) + 1
            out.append(
                self._anomaly(
                    "self_deadlock",
                    int(pos),
                    depth,
                    f"waits for a lock it already holds (depth {depth - 1}); never granted",
                )
            )
        return out

    def _reentrancy(self) -> list[Anomaly]:
        h = self.rp.holds
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
        for i, depth in zip(deepest["i"], deepest["depth"], strict=True):
            pos = int(h.origin[i]) if h.origin[i] >= 0 else int(h.start[i])
            depth = int(depth)
            kind = "depth_exceeded" if depth > self.opts.max_depth else "reentrant"
            detail = f"nested to depth {depth}" + (
                f", above --max-depth {self.opts.max_depth}"
                if kind == "depth_exceeded"
                else "; the lock was granted again to its owner"
            )
            out.append(self._anomaly(kind, pos, depth, detail))
        return out

    def _excess_releases(self) -> list[Anomaly]:
        ev, h = self.ev, self.rp.holds
        exc = self.rp.excess
        if not len(exc):
            return []
        pre = set(h.end[h.before_start].tolist())
        holds = pd.DataFrame(
            {
                "file": self.task_file[h.task],
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
                tid, comm = self._task(int(owner[pos]))
                out.append(
                    self._anomaly(
                        "foreign_release", pos, 0, f"released while {comm}/{tid} holds it"
                    )
                )
            elif pos in pre:
                out.append(
                    self._anomaly(
                        "held_before_start",
                        pos,
                        1,
                        "released before any acquisition: held when the trace began",
                    )
                )
            else:
                out.append(
                    self._anomaly("unbalanced_release", pos, 0, "released while no task holds it")
                )
        return out

    def _held_at_end(self, blocked_tasks: set[int]) -> list[Anomaly]:
        h = self.rp.holds
        out = []
        for i in np.flatnonzero(~h.released & (h.depth == 1)).tolist():
            if int(h.task[i]) in blocked_tasks:
                continue
            pos = int(h.origin[i]) if h.origin[i] >= 0 else int(h.start[i])
            held_for = int(h.released_ts[i] - h.acquired_ts[i])
            out.append(
                self._anomaly(
                    "held_at_end",
                    pos,
                    1,
                    f"still held when the trace ended, for {fmt_ns(held_for)}",
                )
            )
        return out

    # -- the whole report -------------------------------------------------

    def analysis(self) -> Analysis:
        ev = self.ev
        deadlocks, links = self.deadlocks()
        inversions: list[Inversion] = []
        for graph in self.graphs.values():
            inversions += self.inversions(graph, links)
        blocked = {int(ev.task[p]) for p in self.rp.pending}
        anomalies = self.anomalies(blocked)
        if self.opts.classes:
            wanted = self.opts.classes
            inversions = [i for i in inversions if wanted & {w.src_class for w in i.edges}]
            anomalies = [a for a in anomalies if a.lock_class in wanted]
            deadlocks = [d for d in deadlocks if wanted & {t.waits_for.lock_class for t in d.tasks}]
        if self.no_releases:
            self.notes.append(
                "no release events in "
                + ", ".join(self.no_releases)
                + " (tracepoint backend: contended acquisitions only): "
                "lock ordering and hold times cannot be rebuilt"
            )
        for t in ev.traces:
            if t.meta.lost_events:
                self.notes.append(
                    f"{t.path.name}: {t.meta.lost_events} events were lost while "
                    "recording; some orderings may be missing"
                )
        inversions.sort(key=lambda i: (not i.deadlocked, len(i.cycle), i.level, i.cycle))
        return Analysis(
            traces=[_trace_info(t, span) for t, span in zip(ev.traces, ev.spans, strict=True)],
            summary={
                "events": len(ev),
                "tasks": len(ev.tasks),
                "locks": len(ev.inst_name),
                # a release's class names its unlock site: count the classes locks were taken as
                "classes": len(np.unique(ev.cls[ev.event != RELEASED])),
                "edges": len(self.graphs.get("class", next(iter(self.graphs.values())))),
            },
            notes=self.notes,
            deadlocks=deadlocks,
            inversions=[i for i in inversions if i.gate is None],
            guarded=[i for i in inversions if i.gate is not None],
            anomalies=anomalies,
        )


def _symbols(frames: list[str]) -> tuple[str, ...]:
    """Stack frames without their offsets: the same path on another build."""
    return tuple(frame_symbol(f) for f in frames)


def _trace_info(t: Trace, span: tuple[int, int, int]) -> dict:
    m = t.meta
    events, first, last = span
    return {
        "file": str(t.path),
        "kernel": m.kernel,
        "kernel_version": m.kernel_version,
        "host": m.host,
        "started_at": m.started_at,
        "duration_ns": m.duration_ns,
        "span_ns": last - first,
        "events": events,
        "probes": m.probes,
        "lost_events": m.lost_events,
        "command": m.command,
        **m.extra,
    }
