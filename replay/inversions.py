"""Lock-order inversions: one finding per contradiction between lock orders.

A lock order is a rule kept by most paths; an inversion is the ordering
that breaks it.  On one graph level:

1. Only the strongly connected components of the ordering graph can hold a
   cycle.  They are found on the edge arrays
   (:func:`~lktrace.replay.cycles.strong_labels`), so the millions of edges
   of a large trace cost no Python each; everything below runs on the few
   edges inside non-trivial components.
2. In each component, the orderings seen most often are trusted first and
   kept while they stay acyclic; an ordering that would close a cycle with
   them is a *suspect* (:func:`~lktrace.replay.cycles.feedback_edges`): the
   rarest ordering of that cycle.  Removing the suspects leaves the
   component acyclic.
3. Each suspect is one finding, shown by its shortest cycle: the suspect
   plus the shortest path of trusted orderings back (the rule it breaks),
   with a witness per edge (:class:`~lktrace.replay.evidence.Evidence`).
   How often the rule was seen is the maximum flow of occurrences along the
   trusted orderings from one lock of the suspect to the other: every path
   counts, each occurrence once.
   Every elementary cycle of the component is counted under its rarest
   suspect, up to ``--max-cycles`` per graph.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lktrace.replay.cycles import (
    feedback_edges,
    max_flow,
    shortest_path,
    simple_cycles,
    strong_labels,
)
from lktrace.replay.deadlocks import Link
from lktrace.replay.evidence import Evidence
from lktrace.replay.findings import Inversion, Suspect
from lktrace.replay.graph import Graph
from lktrace.replay.state import ReplayState


def find_inversions(
    state: ReplayState, level: str, links: list[Link], max_cycles: int
) -> tuple[list[Inversion], list[str]]:
    """The inversions of the ``level`` graph, and notes on what ``max_cycles`` cut.

    ``links`` (from :func:`~lktrace.replay.deadlocks.find_deadlocks`) mark the
    edges a deadlock closed.
    """
    graph = state.graphs[level]
    comp = strong_labels(graph.src, graph.dst, len(graph.labels))
    cyclic = np.flatnonzero((comp[graph.src] == comp[graph.dst]) & (graph.src != graph.dst))
    if not len(cyclic):
        return [], []
    # most trusted first: seen most often, then seen first
    first_ts = state.events.ts[state.pairs.attempt[graph.first_pairs[cyclic]]]
    cyclic = cyclic[np.lexsort((first_ts, -graph.count[cyclic]))]
    prefer = _deadlocked_pairs(state, graph, links)
    evidence = Evidence(state, graph, prefer)
    budget, cut = max_cycles, False
    contradictions: list[Contradiction] = []
    # the edges of each component together, most trusted first within it
    cyclic = cyclic[np.argsort(comp[graph.src[cyclic]], kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(comp[graph.src[cyclic]]) != 0])
    for edges in np.split(cyclic, starts[1:]):
        found_here, more = _component(graph, edges, budget)
        budget -= sum(len(x[2]) for x in found_here)
        cut = cut or more
        contradictions += found_here
    # past max_cycles, show the deadlocked ones and then the rarest suspects
    deadlocked = set(prefer)
    contradictions = [c for c in contradictions if not _class_graph_has_it(state, evidence, c[1])]
    contradictions.sort(
        key=lambda x: (not set(_cycle_edges(graph, x[1])) <= deadlocked, graph.count[x[0]])
    )
    found: list[Inversion] = []
    for _, shown, listed, against in contradictions[:max_cycles]:
        inv = _inversion(evidence, shown, listed, against, deadlocked)
        found.append(replace(inv, cycles_cut=cut))
    dropped = max(len(contradictions) - max_cycles, 0)
    notes = []
    if cut and found:
        notes.append(
            f"{level} graph has more than {max_cycles} elementary cycles (--max-cycles): "
            "each finding still shows its shortest cycle; the longer ones counted stop there"
        )
    if dropped:
        notes.append(
            f"{level} graph: {dropped} more contradicting orderings not shown (--max-cycles)"
        )
    return found, notes


#: A contradiction: suspect edge, the shown cycle's nodes (starting where the
#: suspect leads), every cycle listed under it, as node lists, and how often
#: the trusted orderings ordered the suspect's two locks the other way.
Contradiction = tuple[int, list[int], list[list[int]], int]


def _component(graph: Graph, edges: np.ndarray, budget: int) -> tuple[list[Contradiction], bool]:
    """The contradictions of one strongly connected component, rarest suspect first,
    and whether listing its cycles stopped at ``budget``.

    ``edges`` are the component's, most trusted first.
    """
    pairs = list(zip(graph.src[edges].tolist(), graph.dst[edges].tolist(), strict=True))
    edge_of = {p: int(e) for p, e in zip(pairs, edges.tolist(), strict=True)}
    out, kept = feedback_edges(pairs, graph.count[edges].tolist())
    suspects = [int(edges[i]) for i in out]
    suspects.sort(key=lambda e: int(graph.count[e]))  # stable: ties stay in trust order
    listed: dict[int, list[list[int]]] = {e: [] for e in suspects}
    rank = {e: i for i, e in enumerate(suspects)}
    adj: dict[int, list[int]] = {}
    for u, v in pairs:
        adj.setdefault(u, []).append(v)
    cycles, more = simple_cycles(adj, max(budget, 0))
    for nodes in cycles:
        on = [edge_of[(u, v)] for u, v in zip(nodes, nodes[1:] + nodes[:1], strict=True)]
        rarest = min((e for e in on if e in rank), key=rank.__getitem__)
        at = on.index(rarest)  # start where the suspect leads
        listed[rarest].append(nodes[at + 1 :] + nodes[: at + 1])
    local = {n: i for i, n in enumerate(dict.fromkeys(x for p in pairs for x in p))}
    trusted = [(local[u], local[v]) for u, vs in kept.items() for v in vs]
    capacity = [int(graph.count[edge_of[(u, v)]]) for u, vs in kept.items() for v in vs]
    found = []
    for e in suspects:
        u, v = int(graph.src[e]), int(graph.dst[e])
        shown = shortest_path(kept, v, u)
        cycles = sorted(listed[e], key=len)
        if shown in cycles:
            cycles.remove(shown)
        against = max_flow(trusted, capacity, local[v], local[u], len(local))
        found.append((e, shown, [shown, *cycles], against))
    return found, more


def _class_graph_has_it(state: ReplayState, evidence: Evidence, nodes: list[int]) -> bool:
    """Whether the class graph reports this instance cycle: no two of its instances
    share a class, so its classes close a cycle too."""
    return (
        evidence.graph.level == "instance"
        and state.filters.level == "both"
        and not any(evidence.same_class(e) for e in _cycle_edges(evidence.graph, nodes))
    )


def _inversion(
    evidence: Evidence,
    nodes: list[int],
    listed: list[list[int]],
    against: int,
    deadlocked: set[int],
) -> Inversion:
    """The finding of one suspect, shown by the cycle through ``nodes``."""
    graph = evidence.graph
    edges = _cycle_edges(graph, nodes)
    counts = [int(graph.count[e]) for e in edges]
    labels = graph.labels
    return replace(
        evidence.inversion(nodes, edges, deadlocked),
        counts=counts,
        suspect=Suspect(
            src=labels[nodes[-1]],
            dst=labels[nodes[0]],
            count=counts[-1],
            against=[labels[n] for n in nodes],
            against_count=against,
        ),
        cycles=[[labels[n] for n in c] for c in listed],
    )


def _cycle_edges(graph: Graph, nodes: list[int]) -> list[int]:
    """The edges of the cycle through ``nodes``, in order."""
    return graph.find(nodes, nodes[1:] + nodes[:1]).tolist()


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
