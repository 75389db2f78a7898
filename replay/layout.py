"""Draw a :class:`LockGraph` as SVG without Graphviz: a small layered layout.

The Sugiyama recipe, cut down to what lock graphs need (tens of nodes):

1. edges closing a cycle are turned around, and each lock goes one layer
   below its deepest predecessor (longest path);
2. every edge is cut into a chain of virtual nodes, one per layer it
   crosses, with layers doubled so that each edge has a virtual node of its
   own between its ends: that one carries the label, so labels get room and
   the two edges of an AB-BA pair run apart;
3. barycenter sweeps order each layer, then each node is pulled towards the
   mean position of its neighbours while keeping its layer's order and gaps;
4. edges are smooth curves through their chain.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from itertools import count, pairwise

from lktrace.replay.dot import GREEN, RED, Edge, LockGraph

NODE_H = 28
HALF_GAP = 44  # between a layer of locks and the layer of labels below it
GAP = 24  # between neighbours in a layer
MARGIN = 20
CHAR_W = 7.0  # average glyph width of a 12px node label
LABEL_CHAR_W = 5.6  # of a 10px edge label
WIRE = 8  # width of a virtual node that carries no label

_COLOUR = {"": "#757575", "inverted": RED, "guarded": GREEN}


def _ranks(nodes: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    """Layer of each node: longest path from a source once back edges are ignored."""
    succ: dict[int, list[int]] = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
    state: dict[int, int] = {}  # 1 on the DFS stack, 2 done
    forward: list[tuple[int, int]] = []
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            v, it = stack[-1]
            for w in it:
                if state.get(w) == 1:
                    continue  # back edge: closes a cycle
                forward.append((v, w))
                if w not in state:
                    state[w] = 1
                    stack.append((w, iter(succ[w])))
                    break
            else:
                state[v] = 2
                stack.pop()
    rank = dict.fromkeys(nodes, 0)
    for _ in nodes:  # relax until stable: the forward graph is small and acyclic
        changed = False
        for s, d in forward:
            if rank[d] < rank[s] + 1:
                rank[d] = rank[s] + 1
                changed = True
        if not changed:
            break
    return rank


class _Layout:
    """Positions of locks and virtual nodes, and each edge's chain top to bottom."""

    def __init__(self, g: LockGraph) -> None:
        rank = _ranks(list(g.labels), [(e.src, e.dst) for e in g.edges])
        self.layer = {n: 2 * r for n, r in rank.items()}
        self.width = {n: max(60.0, CHAR_W * len(label) + 24) for n, label in g.labels.items()}
        self.chains: list[list[int]] = []
        self.label_node: list[int] = []
        virtual = count(-1, -1)
        for e in g.edges:
            top, bottom = sorted((e.src, e.dst), key=self.layer.__getitem__)
            chain = [top]
            mid = (self.layer[top] + self.layer[bottom]) // 2
            for lay in range(self.layer[top] + 1, self.layer[bottom]):
                v = next(virtual)
                self.layer[v] = lay
                self.width[v] = _label_width(e) if lay == mid else WIRE
                if lay == mid:
                    self.label_node.append(v)
                chain.append(v)
            self.chains.append([*chain, bottom])
        self.layers: list[list[int]] = [[] for _ in range(max(self.layer.values(), default=-1) + 1)]
        for n, lay in self.layer.items():
            self.layers[lay].append(n)
        self.up: dict[int, list[int]] = defaultdict(list)
        self.down: dict[int, list[int]] = defaultdict(list)
        for chain in self.chains:
            for a, b in pairwise(chain):
                self.down[a].append(b)
                self.up[b].append(a)
        self._order()
        self.x = self._place()

    def _order(self) -> None:
        """Barycenter sweeps, down then up."""
        for sweep in range(8):
            down = sweep % 2 == 0
            for lay in self.layers[1:] if down else self.layers[-2::-1]:
                pos = {n: i for layer in self.layers for i, n in enumerate(layer)}
                near = self.up if down else self.down

                def centre(n: int, pos=pos, near=near) -> float:
                    ns = near.get(n)
                    return sum(pos[m] for m in ns) / len(ns) if ns else pos[n]

                lay.sort(key=centre)

    def _place(self) -> dict[int, float]:
        """x of each node: pulled to its neighbours' mean, in order, gaps kept."""
        x: dict[int, float] = {}
        for lay in self.layers:
            at = 0.0
            for n in lay:
                x[n] = at + self.width[n] / 2
                at += self.width[n] + GAP
        for sweep in range(24):
            down = sweep % 2 == 0
            for lay in self.layers[1:] if down else self.layers[-2::-1]:
                want = []
                for n in lay:
                    ns = self.up[n] + self.down[n]
                    want.append(sum(x[m] for m in ns) / len(ns) if ns else x[n])
                placed = []
                for i, n in enumerate(lay):
                    lo = (
                        placed[-1] + (self.width[lay[i - 1]] + self.width[n]) / 2 + GAP
                        if i
                        else None
                    )
                    placed.append(want[i] if lo is None else max(want[i], lo))
                shift = sum(w - p for w, p in zip(want, placed, strict=True)) / len(lay)
                for n, p in zip(lay, placed, strict=True):
                    x[n] = p + shift
        left = min((x[n] - self.width[n] / 2 for n in x), default=0.0)
        return {n: v - left + MARGIN for n, v in x.items()}

    def y(self, n: int) -> float:
        return MARGIN + NODE_H / 2 + self.layer[n] * HALF_GAP


def _label(e: Edge) -> str:
    return e.label + (f" \u00d7{e.count}" if e.count > 1 else "")


def _label_width(e: Edge) -> float:
    return LABEL_CHAR_W * len(_label(e)) + 12


def layered_svg(g: LockGraph, uid: str = "g") -> str:
    """An SVG drawing of ``g``; node groups carry a ``<title>`` with the lock's label."""
    lay = _Layout(g)
    width = max((lay.x[n] + lay.width[n] / 2 for n in lay.x), default=0) + MARGIN
    height = (len(lay.layers) - 1) * HALF_GAP + NODE_H + 2 * MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lockgraph" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        'role="img"><defs>'
    ]
    for style, colour in _COLOUR.items():
        out.append(
            f'<marker id="{uid}-arrow{style}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    ports = _ports(lay)
    for i, e in enumerate(g.edges):
        out.append(_edge(e, lay, lay.chains[i], lay.label_node[i], ports, uid))
    for n, label in g.labels.items():
        x, y, w = lay.x[n], lay.y(n), lay.width[n]
        hot = g.hot.get(n, "")
        stroke = _COLOUR[hot] if hot else "#9e9e9e"
        out.append(
            f'<g class="node{" " + hot if hot else ""}"><title>{escape(label)}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - NODE_H / 2:.1f}" width="{w:.1f}" '
            f'height="{NODE_H}" rx="6" fill="{"#fff" if hot else "#f5f5f5"}" '
            f'stroke="{stroke}" stroke-width="{2 if hot else 1}"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(label)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _ports(lay: _Layout) -> dict[tuple[int, int], float]:
    """Where each chain leaves or enters a lock: spread along its bottom or top side."""
    ports: dict[tuple[int, int], float] = {}
    for n in [n for n in lay.x if n >= 0]:
        for side in (lay.down[n], lay.up[n]):
            ends = sorted(side, key=lay.x.__getitem__)
            span = lay.width[n] * 0.6
            for k, m in enumerate(ends):
                ports[(n, m)] = lay.x[n] + (k + 1) * span / (len(ends) + 1) - span / 2
    return ports


def _edge(e: Edge, lay: _Layout, chain: list[int], label_at: int, ports, uid: str) -> str:
    pts = []
    for i, n in enumerate(chain):
        if n >= 0:  # a lock: the port on the side facing the chain's next or previous node
            other = chain[1] if i == 0 else chain[-2]
            dy = NODE_H / 2 if i == 0 else -NODE_H / 2
            pts.append((ports[(n, other)], lay.y(n) + dy))
        elif n == label_at:  # the label's virtual node: run along its left side
            pts.append((lay.x[n] - lay.width[n] / 2 + 3, lay.y(n)))
        else:
            pts.append((lay.x[n], lay.y(n)))
    if chain[0] != e.src:
        pts.reverse()  # drawn from the lock held to the lock wanted
    d = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in pairwise(pts):
        ym = (y0 + y1) / 2
        d.append(f"C{x0:.1f},{ym:.1f} {x1:.1f},{ym:.1f} {x1:.1f},{y1:.1f}")
    colour = _COLOUR[e.style]
    dash = ' stroke-dasharray="5,3"' if e.style == "guarded" else ""
    label = _label(e)
    lx, ly = lay.x[label_at] - lay.width[label_at] / 2 + 8, lay.y(label_at) + 3
    return (
        f'<g class="edge{" " + e.style if e.style else ""}"><title>{escape(label)}</title>'
        f'<path d="{" ".join(d)}" fill="none" stroke="{colour}" '
        f'stroke-width="{2 if e.style == "inverted" else 1.2}"{dash} '
        f'marker-end="url(#{uid}-arrow{e.style})"/>'
        f'<text class="elabel" x="{lx:.1f}" y="{ly:.1f}" fill="{colour}">{escape(label)}</text></g>'
    )
