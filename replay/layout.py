"""Draw a :class:`LockGraph` as SVG without Graphviz: a small layered layout.

The Sugiyama recipe, cut down to what lock graphs need (tens of nodes):
edges closing a cycle are turned around for ranking, each node goes one
layer below its deepest predecessor, a few barycenter sweeps order each
layer, and edges are curves, bent to the right of their direction so that
the two edges of an AB-BA pair never lie on top of each other.
"""

from __future__ import annotations

from html import escape

from lktrace.replay.dot import GREEN, RED, LockGraph

NODE_H = 28
LAYER_GAP = 90
NODE_GAP = 36
MARGIN = 70
CHAR_W = 7.0  # average glyph width at 12px sans-serif

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
    for _ in nodes:  # Bellman-Ford style relaxation; the graph is small and acyclic
        changed = False
        for s, d in forward:
            if rank[d] < rank[s] + 1:
                rank[d] = rank[s] + 1
                changed = True
        if not changed:
            break
    return rank


def _order(layers: list[list[int]], edges: list[tuple[int, int]]) -> None:
    """Reorder each layer by the mean position of its neighbours, sweeping down and up."""
    nbrs: dict[int, list[int]] = {}
    for s, d in edges:
        nbrs.setdefault(s, []).append(d)
        nbrs.setdefault(d, []).append(s)
    for sweep in range(8):
        seq = layers[1:] if sweep % 2 == 0 else layers[-2::-1]
        for layer in seq:
            pos = {n: i for lay in layers for i, n in enumerate(lay)}
            here = set(layer)

            def centre(n: int, pos=pos, here=here) -> float:
                near = [pos[m] for m in nbrs.get(n, []) if m not in here]
                return sum(near) / len(near) if near else pos[n]

            layer.sort(key=centre)


def layered_svg(g: LockGraph, uid: str = "g") -> str:
    """An SVG drawing of ``g``; node groups carry a ``<title>`` with the lock's label."""
    nodes = list(g.labels)
    pairs = [(e.src, e.dst) for e in g.edges]
    rank = _ranks(nodes, pairs)
    layers: list[list[int]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for n in nodes:
        layers[rank[n]].append(n)
    _order(layers, pairs)

    width = {n: max(60.0, CHAR_W * len(g.labels[n]) + 24) for n in nodes}
    row_w = [sum(width[n] for n in lay) + NODE_GAP * (len(lay) - 1) for lay in layers]
    canvas_w = max(row_w, default=0) + 2 * MARGIN
    xy: dict[int, tuple[float, float]] = {}
    for r, lay in enumerate(layers):
        x = (canvas_w - row_w[r]) / 2
        for n in lay:
            xy[n] = (x + width[n] / 2, MARGIN / 2 + r * LAYER_GAP + NODE_H / 2)
            x += width[n] + NODE_GAP
    canvas_h = len(layers) * LAYER_GAP - LAYER_GAP + NODE_H + MARGIN

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lockgraph" '
        f'viewBox="0 0 {canvas_w:.0f} {canvas_h:.0f}" width="{canvas_w:.0f}" '
        f'height="{canvas_h:.0f}" role="img">',
        "<defs>",
    ]
    for style, colour in _COLOUR.items():
        out.append(
            f'<marker id="{uid}-arrow{style}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    both_ways = set(pairs) & {(d, s) for s, d in pairs}
    for e in g.edges:
        out.append(_edge(e, xy, width, rank, (e.src, e.dst) in both_ways, uid))
    for n in nodes:
        x, y = xy[n]
        hot = g.hot.get(n, "")
        stroke = _COLOUR[hot] if hot else "#9e9e9e"
        w = width[n]
        out.append(
            f'<g class="node{" " + hot if hot else ""}"><title>{escape(g.labels[n])}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - NODE_H / 2:.1f}" width="{w:.1f}" '
            f'height="{NODE_H}" rx="6" fill="{"#fff" if hot else "#f5f5f5"}" '
            f'stroke="{stroke}" stroke-width="{2 if hot else 1}"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
            f"{escape(g.labels[n])}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _edge(e, xy, width, rank, paired: bool, uid: str) -> str:
    (x1, y1), (x2, y2) = xy[e.src], xy[e.dst]
    half = NODE_H / 2
    if rank[e.dst] > rank[e.src]:
        y1, y2 = y1 + half, y2 - half
    elif rank[e.dst] < rank[e.src]:
        y1, y2 = y1 - half, y2 + half
    else:  # same layer: leave from the side facing the target
        side = 1 if x2 > x1 else -1
        x1, x2 = x1 + side * width[e.src] / 2, x2 - side * width[e.dst] / 2
    dx, dy = x2 - x1, y2 - y1
    length = max((dx * dx + dy * dy) ** 0.5, 1.0)
    span = abs(rank[e.dst] - rank[e.src])
    bend = 0.0 if span == 1 and not paired else 28.0 + 12.0 * span
    # control point off the midpoint, to the right of the direction of travel
    cx, cy = (x1 + x2) / 2 - dy / length * bend, (y1 + y2) / 2 + dx / length * bend
    lx, ly = 0.25 * x1 + 0.5 * cx + 0.25 * x2, 0.25 * y1 + 0.5 * cy + 0.25 * y2
    colour = _COLOUR[e.style]
    label = e.label + (f" \u00d7{e.count}" if e.count > 1 else "")
    sw = 2 if e.style == "inverted" else 1.2
    dash = ' stroke-dasharray="5,3"' if e.style == "guarded" else ""
    return (
        f'<g class="edge{" " + e.style if e.style else ""}"><title>{escape(label)}</title>'
        f'<path d="M{x1:.1f},{y1:.1f} Q{cx:.1f},{cy:.1f} {x2:.1f},{y2:.1f}" fill="none" '
        f'stroke="{colour}" stroke-width="{sw}"{dash} marker-end="url(#{uid}-arrow{e.style})"/>'
        f'<text class="elabel" x="{lx:.1f}" y="{ly + 3:.1f}" text-anchor="middle" '
        f'fill="{colour}">{escape(label)}</text></g>'
    )
