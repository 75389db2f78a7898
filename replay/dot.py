"""The lock-ordering graph as Graphviz DOT, with the inverted edges in red.

Each edge is labelled with the function that attempted the second lock
(the witness's caller, offset dropped) and how many times the order was
seen.  Edges on an inversion cycle are red, on a guarded cycle green and
dashed; the nodes of those cycles are outlined in the same colour.
:class:`Orderings` keeps one level's graph as arrays and builds the
:class:`LockGraph` of the part to draw: all of it for DOT, the part around
the cycles or a finding's neighbourhood for a report page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.findings import Analysis
from lktrace.replay.state import ReplayState, replay
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
    style: str = ""  # "", "inverted", "guarded", or "suspect" (an inversion's likely bug)


@dataclass
class LockGraph:
    """What a drawing of the ordering graph needs: nodes, edges and their status."""

    level: str
    labels: dict[int, str]  # node index -> label, only nodes that have edges
    edges: list[Edge]
    hot: dict[int, str] = field(default_factory=dict)  # node -> "inverted" | "guarded"
    total_edges: int = 0  # edges in the whole graph, before any trimming


class Orderings:
    """The ordering graph at one level as arrays, each edge with its status; the
    :class:`LockGraph` of any part of it built on demand, so that drawing a part
    of a big graph costs no Python object per edge of the whole."""

    def __init__(self, state: ReplayState, found: Analysis, level: str) -> None:
        self.level = level
        self.graph = g = state.graphs[level]
        self.ids = {label: n for n, label in enumerate(g.labels)}
        # 0 plain, 1 on a guarded cycle, 2 on an inversion (which wins)
        self.status = np.zeros(len(g), np.int8)
        self.witness_caller: dict[int, str] = {}  # a cycle edge -> its witness's caller
        self.hot: dict[int, str] = {}
        for code, name, group in ((1, "guarded", found.guarded), (2, "inverted", found.inversions)):
            ws = [w for inv in group if inv.level == level for w in inv.edges]
            at = g.find([self.ids[w.src] for w in ws], [self.ids[w.dst] for w in ws])
            for e, w in zip(at.tolist(), ws, strict=True):
                if e >= 0:
                    self.status[e] = code
                    self.witness_caller[e] = w.caller
                    self.hot[int(g.src[e])] = self.hot[int(g.dst[e])] = name
        first = state.pairs.attempt[g.occurrences[g.first]] if len(g) else np.zeros(0, np.int64)
        self.caller = state.events.caller[first]  # of each edge's first occurrence
        self.callers = state.events.callers

    def __len__(self) -> int:
        return len(self.graph)

    def ranked(self) -> np.ndarray:
        """Edges in the order trimming keeps them: those of inversions first, then of
        guarded cycles, then edges between their nodes, edges touching them, and the
        most frequent others."""
        hot = np.zeros(len(self.graph.labels), bool)
        hot[list(self.hot)] = True
        hs, hd = hot[self.graph.src], hot[self.graph.dst]
        keys = (-self.graph.count, ~(hs | hd), ~(hs & hd), self.status == 0, self.status != 2)
        return np.lexsort(keys)

    def trimmed(self, max_edges: int) -> LockGraph:
        """The whole graph, or its first ``max_edges`` edges as :meth:`ranked` orders them."""
        return self.lock_graph(None if len(self) <= max_edges else self.ranked()[:max_edges])

    def touching(self, nodes: Iterable[int]) -> np.ndarray:
        """Edges with an end in ``nodes``."""
        nodes = np.fromiter(nodes, np.int64)
        return np.flatnonzero(np.isin(self.graph.src, nodes) | np.isin(self.graph.dst, nodes))

    def lock_graph(self, edges: np.ndarray | None = None) -> LockGraph:
        """The edges at the indices ``edges`` (all by default), in that order."""
        g = self.graph
        picked = np.arange(len(g)) if edges is None else np.asarray(edges, np.int64)
        out = []
        style = ("", "guarded", "inverted")
        for e, s, d, n, st, c in zip(
            picked.tolist(),
            g.src[picked].tolist(),
            g.dst[picked].tolist(),
            g.count[picked].tolist(),
            self.status[picked].tolist(),
            self.caller[picked].tolist(),
            strict=True,
        ):
            caller = self.witness_caller.get(e) or self.callers[c]
            out.append(Edge(s, d, function(caller), n, style[st]))
        nodes = sorted({n for e in out for n in (e.src, e.dst)})
        hot = {n: self.hot[n] for n in nodes if n in self.hot}
        return LockGraph(self.level, {n: g.labels[n] for n in nodes}, out, hot, len(g))


def lock_graph(
    state: ReplayState, found: Analysis, level: str, max_edges: int | None = None
) -> LockGraph:
    """The ordering graph at ``level``; with ``max_edges``, the part around the cycles
    (see :meth:`Orderings.trimmed`)."""
    o = Orderings(state, found, level)
    return o.lock_graph() if max_edges is None else o.trimmed(max_edges)


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
        f"  comment={_quote('written by ' + writer())};",
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
