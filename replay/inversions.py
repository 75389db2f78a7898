"""Lock-order inversions: cycles of the ordering graph, with witnesses.

Only the strongly connected components of a graph can hold a cycle, and on
real traces they are few and small: they are found on the edge arrays
(:func:`~lktrace.replay.cycles.cyclic_edges`) and only their edges are
searched for cycles.
"""

from __future__ import annotations

import numpy as np

from lktrace.replay.cycles import cyclic_edges, shortest_cycles, simple_cycles
from lktrace.replay.deadlocks import Link
from lktrace.replay.evidence import Evidence
from lktrace.replay.findings import Inversion
from lktrace.replay.graph import Graph
from lktrace.replay.state import ReplayState


def find_inversions(
    state: ReplayState, level: str, links: list[Link], max_cycles: int
) -> tuple[list[Inversion], list[str]]:
    """The inversions of the ``level`` graph, and notes on how they were found.

    ``links`` (from :func:`~lktrace.replay.deadlocks.find_deadlocks`) mark the
    edges a deadlock closed.
    """
    graph = state.graphs[level]
    prefer = _deadlocked_pairs(state, graph, links)
    evidence = Evidence(state, graph, prefer)
    edges = np.flatnonzero(cyclic_edges(graph.src, graph.dst, len(graph.labels)))
    adj: dict[int, list[int]] = {}
    for s, d in zip(graph.src[edges].tolist(), graph.dst[edges].tolist(), strict=True):
        adj.setdefault(s, []).append(d)
    notes = []
    cycles, cut = simple_cycles(adj, max_cycles)
    if cut:  # too many to list: the shortest cycle through each edge, rarest edges first
        rare = edges[np.argsort(graph.count[edges], kind="stable")]
        pairs = zip(graph.src[rare].tolist(), graph.dst[rare].tolist(), strict=True)
        cycles, cut = shortest_cycles(adj, pairs, max_cycles)
        notes.append(
            f"{level} graph has more than {max_cycles} elementary cycles (--max-cycles): "
            "showing the shortest cycle through each edge, rarest edges first"
            + (f", the first {max_cycles}" if cut else "")
        )
    found = []
    for nodes in cycles:
        first = min(range(len(nodes)), key=lambda i: graph.labels[nodes[i]])
        nodes = nodes[first:] + nodes[:first]  # start at the smallest label: stable output
        on = graph.find(nodes, nodes[1:] + nodes[:1]).tolist()
        if (
            level == "instance"
            and state.filters.level == "both"
            and not any(evidence.same_class(e) for e in on)
        ):
            continue  # the class graph reports it
        found.append(evidence.inversion(nodes, on, set(prefer)))
    return found, notes


def _deadlocked_pairs(state: ReplayState, graph: Graph, links: list[Link]) -> dict[int, int]:
    """Edge -> the ordering pair a deadlocked task made on it."""
    pairs = state.pairs
    stuck = np.flatnonzero(np.isin(pairs.attempt, [p for _, p in links]))
    pair_of = {(int(pairs.hold[i]), int(pairs.attempt[i])): int(i) for i in stuck}
    prefer = {}
    for hold, pos in links:
        p = pair_of.get((hold, pos))
        if p is None:
            continue
        src, dst = state.edge_nodes(graph.level, p)
        e = int(graph.find([src], [dst])[0])
        if e >= 0:
            prefer[e] = p
    return prefer
