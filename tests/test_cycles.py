"""The cycle algorithms against networkx (a test-only reference) on random graphs."""

from __future__ import annotations

import random
from itertools import pairwise

import networkx as nx
import numpy as np
import pytest

from lktrace.replay.cycles import (
    cyclic_edges,
    feedback_edges,
    max_flow,
    shortest_path,
    simple_cycles,
    strong_labels,
)


def random_graph(seed: int, nodes: int, edges: int) -> nx.DiGraph:
    rng = random.Random(seed)
    g = nx.DiGraph()
    g.add_nodes_from(range(nodes))
    while g.number_of_edges() < edges:
        u, v = rng.randrange(nodes), rng.randrange(nodes)
        if u != v:
            g.add_edge(u, v, weight=rng.choice((1, 1, 2, 5, 40)))
    return g


def adjacency(g: nx.DiGraph) -> dict[int, list[int]]:
    return {u: list(g.successors(u)) for u in g.nodes}


def canonical(cycle: list[int]) -> tuple[int, ...]:
    i = cycle.index(min(cycle))
    return tuple(cycle[i:] + cycle[:i])


GRAPHS = [(seed, n, e) for seed in range(6) for n, e in ((6, 10), (9, 18), (12, 20))]


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS)
def test_components_match_networkx(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    src, dst = (np.array(x, np.int64) for x in zip(*g.edges, strict=True))
    labels = strong_labels(src, dst, nodes)
    ours = {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}
    assert ours == {frozenset(c) for c in nx.strongly_connected_components(g)}
    on_cycle = {(u, v) for c in nx.simple_cycles(g) for u, v in zip(c, c[1:] + c[:1], strict=True)}
    mask = cyclic_edges(src, dst, nodes)
    assert {e for e, m in zip(g.edges, mask.tolist(), strict=True) if m} == on_cycle


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS)
def test_elementary_cycles_match_networkx(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    want = {canonical(c) for c in nx.simple_cycles(g)}
    cycles, cut = simple_cycles(adjacency(g), len(want) + 1)
    assert not cut and len(cycles) == len(want)
    assert {canonical(c) for c in cycles} == want


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS)
def test_max_cycles_cuts_the_listing(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    want = {canonical(c) for c in nx.simple_cycles(g)}
    if len(want) < 2:
        pytest.skip("too few cycles to cut")
    limit = len(want) // 2
    cycles, cut = simple_cycles(adjacency(g), limit)
    assert cut and len(cycles) == limit
    found = {canonical(c) for c in cycles}
    assert len(found) == limit and found <= want  # distinct, and real
    _, cut = simple_cycles(adjacency(g), len(want))
    assert not cut


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS)
def test_shortest_paths_match_networkx(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    adj = adjacency(g)
    for u in range(nodes):
        for v in range(nodes):
            path = shortest_path(adj, u, v)
            if not nx.has_path(g, u, v):
                assert path is None
                continue
            assert path[0] == u and path[-1] == v
            assert all(g.has_edge(a, b) for a, b in pairwise(path))
            assert len(path) - 1 == nx.shortest_path_length(g, u, v)


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS)
def test_feedback_edges_leave_a_dag_and_each_closes_a_cycle(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    order = sorted(g.edges, key=lambda e: -g.edges[e]["weight"])
    out, kept = feedback_edges(order, [g.edges[e]["weight"] for e in order])
    taken = [order[i] for i in out]
    rest = g.copy()
    rest.remove_edges_from(taken)
    assert nx.is_directed_acyclic_graph(rest)
    assert {(u, v) for u, vs in kept.items() for v in vs} == set(rest.edges)
    for u, v in taken:  # minimal: each one put back alone closes a cycle
        assert nx.has_path(rest, v, u)
    if nx.is_directed_acyclic_graph(g):
        assert not taken


def test_feedback_edges_take_the_rare_ordering_not_the_rule():
    # a chain 0 -> 1 -> ... -> 9 seen often, each lock also before the one two
    # further on, and one ordering seen once that goes back: 9 -> 0
    edges = [(i, i + 1) for i in range(9)] + [(i, i + 2) for i in range(8)] + [(9, 0)]
    weights = [50] * 9 + [20] * 8 + [1]
    out, _ = feedback_edges(edges, weights)
    assert [edges[i] for i in out] == [(9, 0)]
    # ties go to the order given: the first of two equal orderings is trusted
    out, _ = feedback_edges([(0, 1), (1, 0)], [3, 3])
    assert out == [1]


@pytest.mark.parametrize(("seed", "nodes", "edges"), GRAPHS[:9])
def test_max_flow_matches_networkx(seed, nodes, edges):
    g = random_graph(seed, nodes, edges)
    pairs = list(g.edges)
    caps = [g.edges[e]["weight"] for e in pairs]
    for s, t in ((0, nodes - 1), (1, 2), (nodes - 1, 0)):
        want = nx.maximum_flow_value(g, s, t, capacity="weight")
        assert max_flow(pairs, caps, s, t, nodes) == want
