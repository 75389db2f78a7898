"""The lock-ordering graph as Graphviz DOT, with the inverted edges in red.

Each edge is labelled with the function that attempted the second lock
(the witness's caller, offset dropped) and how many times the order was
seen.  Edges on an inversion cycle are red, on a guarded cycle green and
dashed; the nodes of those cycles are outlined in the same colour.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

from lktrace.replay.analyze import Options, Run, select
from lktrace.replay.findings import Analysis, Inversion
from lktrace.trace import Trace
from lktrace.version import writer

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
    style: str = ""  # "", "inverted" or "guarded"


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


def lock_graph(run: Run, analysis: Analysis, level: str, max_edges: int | None = None) -> LockGraph:
    """The ordering graph at ``level``; with ``max_edges``, the part around the cycles.

    Trimming keeps the edges of inversions first, then of guarded cycles, then
    edges between their nodes, edges touching them, and the most frequent others.
    """
    graph = run.graphs[level]
    inverted = _cycle_edges(analysis.inversions, level)
    guarded = _cycle_edges(analysis.guarded, level)
    ev, pairs = run.ev, run.pairs
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
    total = len(edges)
    if max_edges is not None and total > max_edges:

        def rank(e: Edge) -> tuple:
            both, one = e.src in hot and e.dst in hot, e.src in hot or e.dst in hot
            return (e.style != "inverted", not e.style, not both, not one, -e.count)

        edges = sorted(edges, key=rank)[:max_edges]
    nodes = {n for e in edges for n in (e.src, e.dst)}
    return LockGraph(level, {n: graph.labels[n] for n in sorted(nodes)}, edges, hot, total)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(g: LockGraph) -> str:
    """DOT text for ``g``: top-down, one node per lock (class or instance)."""
    lines = [
        f"digraph {_quote('lock order (' + g.level + ')')} {{",
        f"  comment={_quote('written by ' + writer())};",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", '
        'fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#616161"];',
    ]
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
        label = e.label + (f" \u00d7{e.count}" if e.count > 1 else "")
        attrs = [f"label={_quote(label)}"]
        if e.style == "inverted":
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
    run = Run((select(t, opts) for t in traces), opts, drop_tables)
    analysis = run.analysis()
    level = "instance" if opts.level == "instance" else "class"
    return to_dot(lock_graph(run, analysis, level)), analysis


def graphviz_svg(dot_text: str, timeout: float = 30) -> str | None:
    """Lay out ``dot_text`` with Graphviz ``dot``; None when it is not installed or fails."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    svg = proc.stdout
    return svg[svg.find("<svg") :]  # drop the XML prolog and doctype: it goes inline in HTML
