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

Layers run top-down, or left to right (``across``) for a graph whose layers
are long and few (a lock taken before twenty others): :func:`across` says
which, for this layout and for Graphviz's alike.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from itertools import count, pairwise

from lktrace.replay.dot import GREEN, RED, Edge, LockGraph

NODE_H = 28
HALF_GAP = 44  # top-down: from a layer of locks to the layer of labels below it
GAP = 24  # top-down: between neighbours in a layer
ACROSS_GAP = 28  # left to right: between a layer and the next
ACROSS_SEP = 8  # left to right: between neighbours in a layer
LABEL_H = 18  # left to right: an edge label's line above its edge
MARGIN = 20
CHAR_W = 7.8  # glyph width of a 13px node label (monospace, report.css)
LABEL_CHAR_W = 6.6  # of an 11px edge label
WIRE = 8  # breadth of a virtual node that carries no label
ACROSS_WIDER = 1000  # a top-down drawing wider than this, and twice as wide as high, goes across

_COLOUR = {"": "#757575", "inverted": RED, "guarded": GREEN, "suspect": RED}
_WIDTH = {"": 1.2, "inverted": 2, "guarded": 1.2, "suspect": 3.5}


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
    """Positions of locks and virtual nodes, and each edge's chain from the first
    layer to the last.

    ``length`` is a node's extent along its text (a lock's or a label's width,
    0 for a wire), ``size`` its extent along its layer; ``x`` the position in
    its layer, ``at`` the position of each layer.
    """

    def __init__(self, g: LockGraph, across: bool = False) -> None:
        self.across = across
        rank = _ranks(list(g.labels), [(e.src, e.dst) for e in g.edges])
        self.layer = {n: 2 * r for n, r in rank.items()}
        self.length = {n: max(60.0, CHAR_W * len(label) + 24) for n, label in g.labels.items()}
        self.size = {n: NODE_H if across else w for n, w in self.length.items()}
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
                self.length[v] = _label_width(e) if lay == mid else 0.0
                self.size[v] = WIRE
                if lay == mid:
                    self.label_node.append(v)
                    self.size[v] = LABEL_H if across else self.length[v]
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
        self.x = self._place(ACROSS_SEP if across else GAP)
        self.at = self._layer_positions()

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

    def _place(self, gap: float) -> dict[int, float]:
        """Position of each node in its layer: pulled to its neighbours' mean, in
        order, gaps kept."""
        x: dict[int, float] = {}
        for lay in self.layers:
            at = 0.0
            for n in lay:
                x[n] = at + self.size[n] / 2
                at += self.size[n] + gap
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
                        placed[-1] + (self.size[lay[i - 1]] + self.size[n]) / 2 + gap if i else None
                    )
                    placed.append(want[i] if lo is None else max(want[i], lo))
                shift = sum(w - p for w, p in zip(want, placed, strict=True)) / len(lay)
                for n, p in zip(lay, placed, strict=True):
                    x[n] = p + shift
        left = min((x[n] - self.size[n] / 2 for n in x), default=0.0)
        return {n: v - left + MARGIN for n, v in x.items()}

    def _layer_positions(self) -> list[float]:
        """Centre of each layer: evenly spaced top-down; across, each as thick as
        its longest node."""
        if not self.across:
            return [MARGIN + NODE_H / 2 + i * HALF_GAP for i in range(len(self.layers))]
        at, end = [], MARGIN - ACROSS_GAP
        for lay in self.layers:
            thick = max((self.length[n] for n in lay), default=0.0)
            at.append(end + ACROSS_GAP + thick / 2)
            end = at[-1] + thick / 2
        return at

    def pos(self, n: int) -> tuple[float, float]:
        """Centre of node ``n`` on the page."""
        along, at = self.x[n], self.at[self.layer[n]]
        return (at, along) if self.across else (along, at)

    def extent(self) -> tuple[float, float]:
        """Width and height of the drawing."""
        breadth = max((self.x[n] + self.size[n] / 2 for n in self.x), default=0.0) + MARGIN
        last = self.layers[-1] if self.layers else []
        depth = (self.at[-1] if self.at else 0.0) + MARGIN
        depth += max((self.length[n] for n in last), default=0.0) / 2 if self.across else NODE_H / 2
        return (depth, breadth) if self.across else (breadth, depth)


def _label(e: Edge) -> str:
    return e.label + (f" \u00d7{e.count}" if e.count > 1 else "")


def _label_width(e: Edge) -> float:
    return LABEL_CHAR_W * len(_label(e)) + 12


def across(g: LockGraph) -> bool:
    """Whether ``g`` reads better left to right: drawn top-down it would be a wide strip."""
    width, height = _Layout(g).extent()
    return width > ACROSS_WIDER and width > 2 * height


def layered_svg(g: LockGraph, uid: str = "g", across: bool = False) -> str:
    """An SVG drawing of ``g``, top-down or left to right; node groups carry a
    ``<title>`` with the lock's label."""
    lay = _Layout(g, across)
    width, height = lay.extent()
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lockgraph" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        'role="img"><defs>'
    ]
    for style, colour in _COLOUR.items():
        size = 6 + 2.5 * _WIDTH[style]  # px: a thicker edge, a slightly bigger head
        out.append(
            f'<marker id="{uid}-arrow{style}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerUnits="userSpaceOnUse" markerWidth="{size}" markerHeight="{size}" '
            'orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    ports = _ports(lay)
    for i, e in enumerate(g.edges):
        out.append(_edge(e, lay, lay.chains[i], lay.label_node[i], ports, uid))
    for n, label in g.labels.items():
        (x, y), w = lay.pos(n), lay.length[n]
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
    """Where each chain leaves or enters a lock: spread along the side facing the
    next layer or the previous one."""
    ports: dict[tuple[int, int], float] = {}
    for n in [n for n in lay.x if n >= 0]:
        for side in (lay.down[n], lay.up[n]):
            ends = sorted(side, key=lay.x.__getitem__)
            span = lay.size[n] * 0.6
            for k, m in enumerate(ends):
                ports[(n, m)] = lay.x[n] + (k + 1) * span / (len(ends) + 1) - span / 2
    return ports


def _points(lay: _Layout, chain: list[int], label_at: int, ports) -> list[tuple[float, float]]:
    """The points an edge's curve goes through, first layer to last."""
    pts = []
    for i, n in enumerate(chain):
        x, y = lay.pos(n)
        if n >= 0:  # a lock: the port on the side facing the chain's next or previous node
            other = chain[1] if i == 0 else chain[-2]
            half = (lay.length[n] if lay.across else NODE_H) / 2
            at = lay.at[lay.layer[n]] + (half if i == 0 else -half)
            pts.append((at, ports[(n, other)]) if lay.across else (ports[(n, other)], at))
        elif n != label_at:
            pts.append((x, y))
        elif lay.across:  # under the label, from its start to its end
            half, base = lay.length[n] / 2, y + LABEL_H / 2 - 2
            pts += [(x - half, base), (x + half, base)]
        else:  # along the label's left side
            pts.append((x - lay.size[n] / 2 + 3, y))
    return pts


def _edge(e: Edge, lay: _Layout, chain: list[int], label_at: int, ports, uid: str) -> str:
    pts = _points(lay, chain, label_at, ports)
    if chain[0] != e.src:
        pts.reverse()  # drawn from the lock held to the lock wanted
    d = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in pairwise(pts):
        if lay.across:
            xm = (x0 + x1) / 2
            d.append(f"C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        else:
            ym = (y0 + y1) / 2
            d.append(f"C{x0:.1f},{ym:.1f} {x1:.1f},{ym:.1f} {x1:.1f},{y1:.1f}")
    colour = _COLOUR[e.style]
    dash = ' stroke-dasharray="5,3"' if e.style == "guarded" else ""
    label = _label(e)
    x, y = lay.pos(label_at)
    if lay.across:
        lx, ly = x - lay.length[label_at] / 2 + 6, y + 1
    else:
        lx, ly = x - lay.size[label_at] / 2 + 8, y + 3
    return (
        f'<g class="edge{" " + e.style if e.style else ""}"><title>{escape(label)}</title>'
        f'<path d="{" ".join(d)}" fill="none" stroke="{colour}" '
        f'stroke-width="{_WIDTH[e.style]}"{dash} '
        f'marker-end="url(#{uid}-arrow{e.style})"/>'
        f'<text class="elabel" x="{lx:.1f}" y="{ly:.1f}" fill="{colour}">{escape(label)}</text></g>'
    )
