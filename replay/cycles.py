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
