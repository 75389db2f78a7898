"""Cycles in a directed graph: strongly connected components and elementary cycles.

:func:`cyclic_edges` works on whole edge arrays (scipy's strongly connected
components), so a graph of millions of edges costs no Python per edge; the
searches below (Tarjan's components, Johnson's elementary cycles, shortest
cycles) then run on the few edges inside non-trivial components.  They are
iterative, so a long lock chain cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

Node = Hashable


def strong_labels(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """The strongly connected component of each of ``n`` nodes, given the edge arrays."""
    if not n:
        return np.zeros(0, np.int64)
    m = csr_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    return connected_components(m, directed=True, connection="strong")[1]


def cyclic_edges(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Whether each edge lies on a cycle: both ends in one strongly connected component.

    Self-loops (``src == dst``) lie on no cycle of length 2 or more and are excluded.
    """
    labels = strong_labels(src, dst, n)
    return (labels[src] == labels[dst]) & (src != dst) if len(src) else np.zeros(0, bool)


def strongly_connected(adj: Mapping[Node, Iterable[Node]]) -> list[set[Node]]:
    """The strongly connected components of ``adj`` (Tarjan)."""
    index: dict[Node, int] = {}
    low: dict[Node, int] = {}
    on_stack: set[Node] = set()
    stack: list[Node] = []
    out: list[set[Node]] = []
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adj.get(w, ()))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def simple_cycles(adj: Mapping[Node, Iterable[Node]], limit: int) -> tuple[list[list[Node]], bool]:
    """Up to ``limit`` elementary cycles of length >= 2 (Johnson); self-loops are ignored.

    Returns the cycles, each starting at its smallest node, and whether the
    limit cut the enumeration short.
    """
    graph = {v: sorted({w for w in ws if w != v}) for v, ws in adj.items()}
    for ws in list(graph.values()):
        for w in ws:
            graph.setdefault(w, [])
    cycles: list[list[Node]] = []
    todo = [c for c in strongly_connected(graph) if len(c) > 1]
    while todo:
        comp = todo.pop()
        start = min(comp)
        sub = {v: [w for w in graph[v] if w in comp] for v in comp}
        for cycle in _cycles_through(sub, start):
            if len(cycles) == limit:
                return cycles, True
            cycles.append(cycle)
        del sub[start]
        rest = {v: [w for w in ws if w != start] for v, ws in sub.items()}
        todo.extend(c for c in strongly_connected(rest) if len(c) > 1)
    return cycles, False


def _cycles_through(sub: Mapping[Node, list[Node]], start: Node) -> Iterable[list[Node]]:
    """Johnson's circuit search: every elementary cycle of ``sub`` through ``start``."""
    path = [start]
    blocked = {start}
    waiting: dict[Node, set[Node]] = defaultdict(set)
    found_below: list[bool] = [False]
    work = [(start, iter(sub[start]))]
    while work:
        v, it = work[-1]
        for w in it:
            if w == start:
                yield list(path)
                found_below[-1] = True
            elif w not in blocked:
                path.append(w)
                blocked.add(w)
                found_below.append(False)
                work.append((w, iter(sub[w])))
                break
        else:
            work.pop()
            path.pop()
            found = found_below.pop()
            if found:
                _unblock(v, blocked, waiting)
            else:
                for w in sub[v]:
                    waiting[w].add(v)
            if found_below:
                found_below[-1] = found_below[-1] or found


def _unblock(v: Node, blocked: set[Node], waiting: dict[Node, set[Node]]) -> None:
    todo = [v]
    while todo:
        u = todo.pop()
        if u in blocked:
            blocked.discard(u)
            todo.extend(waiting.pop(u, ()))


def shortest_cycles(
    adj: Mapping[Node, Iterable[Node]], edges: Iterable[tuple[Node, Node]], limit: int
) -> tuple[list[list[Node]], bool]:
    """The shortest cycle through each of ``edges`` in turn, without repeats, up to ``limit``.

    For graphs with too many elementary cycles to list: every edge that lies on
    a cycle still shows up in one, the shortest, found by a breadth-first search.
    """
    comp = {v: i for i, c in enumerate(strongly_connected(adj)) for v in c}
    seen: set[tuple[Node, ...]] = set()
    out: list[list[Node]] = []
    for u, v in edges:
        if u == v or comp.get(u) != comp.get(v):
            continue
        back = _bfs_path(adj, v, u, comp)  # v ... u
        cycle = [u, *back[:-1]]
        first = cycle.index(min(cycle))
        key = tuple(cycle[first:] + cycle[:first])
        if key in seen:
            continue
        if len(out) == limit:
            return out, True
        seen.add(key)
        out.append(list(key))
    return out, False


def _bfs_path(
    adj: Mapping[Node, Iterable[Node]], src: Node, dst: Node, comp: Mapping[Node, int]
) -> list[Node]:
    """A shortest path from ``src`` to ``dst`` inside their strongly connected component."""
    parent: dict[Node, Node] = {src: src}
    frontier = [src]
    while dst not in parent:
        nxt = []
        for x in frontier:
            for y in adj.get(x, ()):
                if y not in parent and comp.get(y) == comp[src]:
                    parent[y] = x
                    nxt.append(y)
        frontier = nxt
    path = [dst]
    while path[-1] != src:
        path.append(parent[path[-1]])
    return path[::-1]
