"""The part of the lock-ordering graph that one finding is about.

An inversion's part is the locks of its cycle, the cycle's edges in the
finding's colour (each labelled with its own witness; the suspect ordering,
when it is clearly the exception, drawn thicker), any other ordering
between those locks in grey, and the locks directly ordered before or after
them when there are few of them; a guarded cycle's gate is always kept.  A
deadlock that happened is drawn from what its tasks held and waited for: an
edge from each lock a task held, and another one waits for, to the lock it
waits for itself, labelled with the task (the card's table says where it
waited, and what else it held).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lktrace.replay.dot import Edge, LockGraph, function
from lktrace.replay.findings import Deadlock, Inversion, LockRef
from lktrace.replay.render import lock_label

NEIGHBOURS = 4  # locks next to a cycle drawn at most; with more, they are only counted


@dataclass
class Part:
    """A finding's drawing, and how many neighbouring locks it leaves out."""

    graph: LockGraph
    left_out: int = 0
    around: set[int] = field(default_factory=set)  # neighbours drawn, that could go

    def bare(self) -> Part:
        """The same without its neighbours (for a drawing too wide with them)."""
        g = self.graph
        edges = [e for e in g.edges if e.src not in self.around and e.dst not in self.around]
        labels = {n: label for n, label in g.labels.items() if n not in self.around}
        bare = LockGraph(g.level, labels, edges, g.hot, len(edges))
        return Part(bare, self.left_out + len(self.around))


def inversion_part(near: LockGraph, inv: Inversion) -> Part:
    """The locks of ``inv``'s cycle, from ``near``: every edge of its level's graph
    that touches them."""
    ids = {label: n for n, label in near.labels.items()}
    style = "guarded" if inv.gate else "inverted"
    own = {(ids[w.src], ids[w.dst]): (style, function(w.caller)) for w in inv.edges}
    s = inv.suspect
    if s is not None and s.clear and not inv.gate and (ids[s.src], ids[s.dst]) in own:
        key = ids[s.src], ids[s.dst]
        own[key] = ("suspect", f"suspect: {own[key][1]}")
    cycle = {n for edge in own for n in edge}
    inner, outer = [], []
    for e in near.edges:
        if e.src in cycle and e.dst in cycle:
            st, label = own.get((e.src, e.dst), ("", e.label))
            inner.append(replace(e, style=st, label=label))
        else:
            outer.append(e)
    around = {n for e in outer for n in (e.src, e.dst)} - cycle
    keep = around if len(around) <= NEIGHBOURS else around & {ids.get(inv.gate or "")}
    edges = inner + [replace(e, style="") for e in outer if e.src in keep or e.dst in keep]
    labels = {n: near.labels[n] for n in sorted(cycle | keep)}
    g = LockGraph(near.level, labels, edges, dict.fromkeys(cycle, style), len(edges))
    gate = {ids.get(inv.gate or "")}
    return Part(g, len(around - keep), keep - gate)


def deadlock_part(d: Deadlock) -> Part:
    """The locks of a deadlock that happened: from each lock a task held that another
    task waits for, to the lock it waits for itself; other locks held are counted."""
    ids: dict[tuple[str, str], int] = {}

    def node(ref: LockRef) -> int:
        return ids.setdefault((ref.lock_class, ref.lock_name), len(ids))

    awaited = {node(t.waits_for) for t in d.tasks}
    edges, others = [], set()
    for t in d.tasks:
        for h in t.holds:
            if node(h) in awaited:
                edges.append(Edge(node(h), node(t.waits_for), f"{t.comm}/{t.tid}", 1, "inverted"))
            else:
                others.add(node(h))
    labels = {n: lock_label(*key) for key, n in ids.items() if n in awaited}
    g = LockGraph("instance", labels, edges, dict.fromkeys(awaited, "inverted"), len(edges))
    return Part(g, len(others))
