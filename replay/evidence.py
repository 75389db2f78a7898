"""Evidence for a cycle of the ordering graph: a witness per edge, call paths, gates.

Given the edges of one cycle, :meth:`Evidence.inversion` picks the
occurrence of each edge to show (the one a deadlocked task made, else one
whose locks close the cycle on the very same instances, else one from a
task other than the previous witness's, as two CPUs would be), lists every
distinct call path of each edge, and finds the locks held on every
occurrence of every edge (a gate: such a cycle cannot deadlock).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from lktrace.replay.findings import Inversion
from lktrace.replay.graph import Graph, expand_ranges
from lktrace.replay.paths import symbols
from lktrace.replay.state import ReplayState


class Evidence:
    """Witness building for the cycles of one graph of a state."""

    def __init__(self, state: ReplayState, graph: Graph, prefer: dict[int, int]) -> None:
        self.state = state
        self.graph = graph
        self.prefer = prefer  # edge -> the ordering pair a deadlocked task made on it
        self._gates: dict[int, set[int]] = {}

    @cached_property
    def _pairs_by_attempt(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.state.pairs.attempt, kind="stable")
        return order, self.state.pairs.attempt[order]

    def gates(self, edge: int) -> set[int]:
        """Instances held at every occurrence of ``edge``, besides the edge's own locks."""
        if edge not in self._gates:
            pairs, holds = self.state.pairs, self.state.holds
            occ = self.graph.edge_occurrences(edge)
            order, sorted_att = self._pairs_by_attempt
            att = pairs.attempt[occ]
            which, at = expand_ranges(
                np.searchsorted(sorted_att, att, "left"), np.searchsorted(sorted_att, att, "right")
            )
            held = holds.inst[pairs.hold[order[at]]]
            own = holds.inst[pairs.hold[occ]][which]
            other = held != own
            both = np.unique(np.c_[which[other], held[other]], axis=0)
            insts, n = np.unique(both[:, 1], return_counts=True) if len(both) else ([], [])
            self._gates[edge] = {int(i) for i, c in zip(insts, n, strict=True) if c == len(occ)}
        return self._gates[edge]

    def paths(self, edge: int, limit: int = 8) -> list[int]:
        """Occurrences of ``edge`` that took it along different call paths (first of each).

        A path is the symbols of both stacks without offsets, or the two call
        sites where stacks were not recorded.
        """
        state, ev = self.state, self.state.events
        occ = self.graph.edge_occurrences(edge)
        att = state.pairs.attempt[occ]
        origin = state.holds.origin[state.pairs.hold[occ]]
        held = np.where(origin >= 0, ev.stack[np.maximum(origin, 0)], -1)
        key = np.c_[ev.file[att], ev.stack[att], held, ev.caller[att]]
        _, first = np.unique(key, axis=0, return_index=True)
        found: dict[tuple, int] = {}
        for i in np.sort(first).tolist():
            p = int(occ[i])
            w = state.witness(self.graph.level, p)
            sig = (symbols(w.held_stack) or (w.held_caller,), symbols(w.stack) or (w.caller,))
            found.setdefault(sig, p)
            if len(found) == limit:
                break
        return list(found.values())

    def same_class(self, edge: int) -> bool:
        """Whether ``edge`` joins two instances of one class."""
        pairs = self.state.pairs
        p = self.graph.edge_occurrences(edge)[0]
        return bool(self.state.holds.cls[pairs.hold[p]] == self.state.events.cls[pairs.attempt[p]])

    def inversion(self, nodes: list[int], edges: list[int], deadlocked: set[int]) -> Inversion:
        """The :class:`Inversion` of the cycle ``nodes`` (its ``edges`` in order)."""
        state, graph, level = self.state, self.graph, self.graph.level
        ev, pairs = state.events, state.pairs
        chosen: list[int] = []
        tasks: set[int] = set()
        chain = self._instance_chain(edges) if level == "class" else None
        for i, e in enumerate(edges):
            occ = graph.edge_occurrences(e)
            occ_tasks = ev.task[pairs.attempt[occ]]
            tasks.update(np.unique(occ_tasks).tolist())
            if e in self.prefer or chain:
                chosen.append(self.prefer.get(e, chain[i] if chain else -1))
                continue
            # prefer a task other than the previous witness's, as two CPUs would be
            other = occ[occ_tasks != ev.task[pairs.attempt[chosen[-1]]]] if chosen else occ
            chosen.append(int(other[0] if len(other) else occ[0]))
        gate = set.intersection(*(self.gates(e) for e in edges))
        witnesses = [state.witness(level, p) for p in chosen]
        return Inversion(
            level=level,
            cycle=[graph.labels[n] for n in nodes],
            edges=witnesses,
            paths=[
                [w, *(state.witness(level, p) for p in self.paths(e) if p != c)]
                for w, e, c in zip(witnesses, edges, chosen, strict=True)
            ],
            same_task=len(tasks) == 1,
            same_instances=level == "instance" or chain is not None,
            tasks=[
                dict(zip(("tid", "comm"), state.task(t), strict=True))
                for t in sorted(tasks, key=lambda t: (state.task_file[t], state.task(t)))
            ],
            deadlocked=bool(edges) and all(e in deadlocked for e in edges),
            gate=", ".join(sorted(ev.names[ev.inst_name[g]] for g in gate)) or None,
        )

    def _instance_chain(self, edges: list[int], cap: int = 100_000) -> list[int] | None:
        """For a class cycle, one occurrence per edge such that the instances close a cycle too.

        Lock A's class then B's, B's then A's, on the very same two locks is the
        inversion to show; ``None`` when no such chain exists (or the search
        grows past ``cap`` rows).
        """
        state = self.state
        chain = None
        for i, e in enumerate(edges):
            occ = self.graph.edge_occurrences(e)
            step = pd.DataFrame(
                {
                    f"i{i}": state.holds.inst[state.pairs.hold[occ]],
                    f"i{i + 1}": state.events.inst[state.pairs.attempt[occ]],
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
