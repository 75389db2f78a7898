"""Cycles in a directed graph: strongly connected components and elementary cycles.

Small, dependency-free versions of Tarjan's and Johnson's algorithms, both
iterative so a long lock chain cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping

Node = Hashable


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
