"""The lock-ordering graph as Graphviz DOT, with the inverted edges in red.

Each edge is labelled with the function that attempted the second lock
(the witness's caller, offset dropped) and how many times the order was
seen.  Edges on an inversion cycle are red, on a guarded cycle green and
dashed; the nodes of those cycles are outlined in the same colour.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.findings import Analysis, Inversion
from lktrace.replay.state import ReplayState, replay
from lktrace.trace import Trace

RED = "#c62828"
GREEN = "#2e7d32"
PACK_ABOVE = 30  # edges; see to_dot


def function(caller: str) -> str:
    """``device_release_driver+0x4a/0x1c0`` -> ``device_release_driver``."""
    return caller.split("+", 1)[0]


@dataclass
class Edge:
    src: int  # node index in the graph's labels
    dst: int
    label: str
    count: int
    style: str = ""  # "", "inverted", "guarded", or "suspect" (an inversion's likely bug)


@dataclass
class LockGraph:
    """What a drawing of the ordering graph needs: nodes, edges and their status."""

    level: str
    labels: dict[int, str]  # node index -> label, only nodes that have edges
    edges: list[Edge]
    hot: dict[int, str] = field(default_factory=dict)  # node -> "inverted" | "guarded"
    total_edges: int = 0  # edges in the whole graph, before any trimming


def _cycle_edges(inversions: list[Inversion], level: str) -> dict[tuple[str, str], str]:
    return {(w.src, w.dst): w.caller for inv in inversions if inv.level == level for w in inv.edges}


def lock_graph(
    state: ReplayState, found: Analysis, level: str, max_edges: int | None = None
) -> LockGraph:
    """The ordering graph at ``level``; with ``max_edges``, the part around the cycles
    (see :func:`trimmed`)."""
    graph = state.graphs[level]
    inverted = _cycle_edges(found.inversions, level)
    guarded = _cycle_edges(found.guarded, level)
    ev, pairs = state.events, state.pairs
    first = pairs.attempt[graph.occurrences[graph.first]] if len(graph) else []
    edges = []
    hot: dict[int, str] = {}
    for i, (s, d) in enumerate(zip(graph.src.tolist(), graph.dst.tolist(), strict=True)):
        key = (graph.labels[s], graph.labels[d])
        style = "inverted" if key in inverted else "guarded" if key in guarded else ""
        caller = inverted.get(key) or guarded.get(key) or ev.callers[ev.caller[first[i]]]
        edges.append(Edge(s, d, function(caller), int(graph.count[i]), style))
        if style:
            for n in (s, d):
                hot[n] = "inverted" if style == "inverted" else hot.get(n, style)
    nodes = {n for e in edges for n in (e.src, e.dst)}
    g = LockGraph(level, {n: graph.labels[n] for n in sorted(nodes)}, edges, hot, len(edges))
    return g if max_edges is None else trimmed(g, max_edges)


def trimmed(g: LockGraph, max_edges: int) -> LockGraph:
    """``g`` cut to ``max_edges`` edges, keeping the part around the cycles.

    Trimming keeps the edges of inversions first, then of guarded cycles, then
    edges between their nodes, edges touching them, and the most frequent others.
    """
    if len(g.edges) <= max_edges:
        return g

    def rank(e: Edge) -> tuple:
        both, one = e.src in g.hot and e.dst in g.hot, e.src in g.hot or e.dst in g.hot
        return (e.style != "inverted", not e.style, not both, not one, -e.count)

    edges = sorted(g.edges, key=rank)[:max_edges]
    nodes = {n for e in edges for n in (e.src, e.dst)}
    labels = {n: label for n, label in g.labels.items() if n in nodes}
    return LockGraph(g.level, labels, edges, g.hot, g.total_edges)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(g: LockGraph, across: bool = False, page: bool = False) -> str:
    """DOT text for ``g``: one node per lock (class or instance), top-down or,
    with ``across``, left to right.

    With ``page``, for a report page, drawn at its natural size: Graphviz
    guesses label widths from font metrics, and the page draws labels in
    monospace, as wide as the Courier Graphviz is then told to size for (10 pt
    locks, 8.5 pt edges: 13 and 11 px); edge labels get a space either side.
    """
    font, pad, sizes = ("Courier", " ", (10, 8.5)) if page else ("Helvetica", "", (11, 9))
    lines = [
        f"digraph {_quote('lock order (' + g.level + ')')} {{",
        f"  rankdir={'LR' if across else 'TB'};",
        '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", '
        f'fontname="{font}", fontsize={sizes[0]}];',
        f'  edge [fontname="{font}", fontsize={sizes[1]}, color="#616161"];',
    ]
    if page and not across:
        lines.append("  nodesep=0.4;")  # labels of an AB-BA pair side by side, kept apart
    if len(g.edges) > PACK_ABOVE:
        # side by side, a big graph's components make a page-wide strip; Graphviz
        # 2.43 drops edge labels when packing, which a graph this size can spare
        lines.append('  pack=true; packmode="array_u";')
    colour = {"inverted": RED, "guarded": GREEN}
    for n, label in g.labels.items():
        extra = ""
        if n in g.hot:
            extra = f', color="{colour[g.hot[n]]}", penwidth=2, fillcolor="#ffffff"'
        lines.append(f"  n{n} [label={_quote(label)}{extra}];")
    for e in g.edges:
        label = pad + e.label + (f" \u00d7{e.count}" if e.count > 1 else "") + pad
        attrs = [f"label={_quote(label)}"]
        if e.style == "suspect":
            attrs.append(f'color="{RED}", fontcolor="{RED}", penwidth=3.5')
        elif e.style == "inverted":
            attrs.append(f'color="{RED}", fontcolor="{RED}", penwidth=2')
        elif e.style == "guarded":
            attrs.append(f'color="{GREEN}", fontcolor="{GREEN}", style=dashed')
        lines.append(f"  n{e.src} -> n{e.dst} [{', '.join(attrs)}];")
    if len(g.edges) < g.total_edges:
        shown = f"{len(g.edges)} of {g.total_edges} edges shown"
        lines.append(f"  label={_quote(shown)}; labelloc=b; fontsize=10;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def analyze_dot(
    traces: Iterable[Trace], opts: Options, drop_tables: bool = False
) -> tuple[str, Analysis]:
    """``analyze --format dot``: the class graph, or the instance graph at ``--level instance``."""
    state = replay(traces, opts, drop_tables)
    found = analysis(state, opts)
    level = "instance" if opts.level == "instance" else "class"
    return to_dot(lock_graph(state, found, level)), found


def graphviz_svgs(dot_texts: list[str], timeout: float = 60) -> list[str] | None:
    """Lay out each of ``dot_texts`` with one run of Graphviz ``dot``: one SVG each.

    None when ``dot`` is not installed or fails.  The SVGs come without their
    XML prolog and doctype: they go inline in HTML.
    """
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "-Tsvg"],
            input="".join(dot_texts),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    svgs = re.findall(r"<svg\b.*?</svg>", proc.stdout, re.S)
    return svgs if proc.returncode == 0 and len(svgs) == len(dot_texts) else None
