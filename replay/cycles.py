"""Cycles in a directed graph: strongly connected components and elementary cycles.

:func:`cyclic_edges` works on whole edge arrays (scipy's strongly connected
components), so a graph of millions of edges costs no Python per edge; the
searches below (Tarjan's components, Johnson's elementary cycles, shortest
paths, a feedback edge set, maximum flow) then run on the few edges inside
non-trivial components.  They are
iterative, so a long lock chain cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, maximum_flow

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


def shortest_path(adj: Mapping[Node, Iterable[Node]], src: Node, dst: Node) -> list[Node] | None:
    """A shortest path ``src ... dst`` (breadth first), or None when ``dst`` is out of reach."""
    parent: dict[Node, Node] = {src: src}
    frontier = [src]
    while frontier and dst not in parent:
        nxt = []
        for x in frontier:
            for y in adj.get(x, ()):
                if y not in parent:
                    parent[y] = x
                    nxt.append(y)
        frontier = nxt
    if dst not in parent:
        return None
    path = [dst]
    while path[-1] != src:
        path.append(parent[path[-1]])
    return path[::-1]


def feedback_edges(
    edges: Sequence[tuple[Node, Node]], weights: Sequence[int]
) -> tuple[list[int], dict[Node, list[Node]]]:
    """Edges whose removal leaves the graph acyclic, chosen to weigh little.

    Lays the nodes out in a line (Eades, Lin and Smyth's heuristic, weighted:
    sinks go last, sources first, otherwise the node whose outgoing weight
    most exceeds its incoming weight goes next) and takes the edges pointing
    backwards, the ones against the order most of the weight agrees on.  An
    edge so taken that closes no cycle with the forward edges is put back, so
    every edge returned closes a cycle with the kept ones.  ``edges`` come
    most trusted first, which breaks ties.  Returns the indices of the edges
    taken out and the kept adjacency (a DAG).
    """
    succ: dict[Node, dict[Node, int]] = defaultdict(dict)
    pred: dict[Node, dict[Node, int]] = defaultdict(dict)
    first: dict[Node, int] = {}
    for i, ((u, v), w) in enumerate(zip(edges, weights, strict=True)):
        if u != v:
            succ[u][v] = succ[u].get(v, 0) + w
            pred[v][u] = pred[v].get(u, 0) + w
            first.setdefault(u, i)
    nodes = [*dict.fromkeys([*succ, *pred])]
    out_w = {n: sum(succ[n].values()) for n in nodes}
    in_w = {n: sum(pred[n].values()) for n in nodes}
    heap = [(in_w[n] - out_w[n], first.get(n, len(edges)), i, n) for i, n in enumerate(nodes)]
    heapq.heapify(heap)
    index = {n: i for i, n in enumerate(nodes)}
    alive = set(nodes)
    head: list[Node] = []
    tail: list[Node] = []
    todo = list(nodes)

    def take(n: Node, front: bool) -> None:
        alive.discard(n)
        (head if front else tail).append(n)
        for m, w in succ.pop(n, {}).items():
            del pred[m][n]
            in_w[m] -= w
            todo.append(m)
        for m, w in pred.pop(n, {}).items():
            del succ[m][n]
            out_w[m] -= w
            todo.append(m)
        for m in set(todo):
            if m in alive:
                heapq.heappush(heap, (in_w[m] - out_w[m], first.get(m, len(edges)), index[m], m))

    while alive:
        while todo:
            n = todo.pop()
            if n in alive and not succ.get(n):
                take(n, front=False)
            elif n in alive and not pred.get(n):
                take(n, front=True)
        if not alive:
            break
        delta, _, _, n = heapq.heappop(heap)
        if n in alive and delta == in_w[n] - out_w[n]:
            take(n, front=True)
    pos = {n: i for i, n in enumerate(head + tail[::-1])}
    kept: dict[Node, list[Node]] = defaultdict(list)
    back = []
    for i, (u, v) in enumerate(edges):
        if u != v and pos[u] < pos[v]:
            kept[u].append(v)
        else:
            back.append(i)
    out = []
    for i in back:  # most trusted first: put back what closes no cycle
        u, v = edges[i]
        if u == v or shortest_path(kept, v, u) is not None:
            out.append(i)
        else:
            kept[u].append(v)
    return out, dict(kept)


def max_flow(
    edges: Sequence[tuple[int, int]], capacity: Sequence[int], src: int, dst: int, n: int
) -> int:
    """The maximum flow from ``src`` to ``dst`` over ``edges`` (nodes ``0 .. n-1``)."""
    if src == dst or not len(edges):
        return 0
    rows, cols = np.asarray(edges, np.int32).T
    m = csr_matrix((np.asarray(capacity, np.int32), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    return int(maximum_flow(m, src, dst).flow_value)
