"""The lock-order drawings of a report page: one per finding, and the whole graph.

Each finding gets a figure of the locks it is about (:mod:`.subgraph`), drawn
at its natural size, so that a node label is as tall as the page's text; a
figure wider than its column scrolls sideways rather than shrinking.  The
whole graph sits folded in a ``<details>``, also at natural size, in a box
that scrolls both ways and that report.js gives zoom buttons.  Graphviz lays
everything out in one run of ``dot`` per page part; without it, the built-in
layered layout (:mod:`.layout`) does.  Either way a graph whose top-down
drawing would be a wide strip is drawn left to right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from lktrace.replay.dot import LockGraph, Orderings, graphviz_svgs, to_dot
from lktrace.replay.findings import Analysis, Deadlock, Inversion
from lktrace.replay.identity import Finding
from lktrace.replay.layout import across, layered_svg
from lktrace.replay.state import ReplayState
from lktrace.replay.subgraph import Part, deadlock_part, inversion_part

MAX_GRAPH_EDGES = 60  # of the whole graph drawn; the edges around the cycles first
REPORT_WIDTH = 960  # px a finding's figure may take in a report, neighbours included
COLUMN_WIDTH = 500  # in a column of a diff page (1200 px window)


def draw(graphs: Sequence[LockGraph], uids: Sequence[str]) -> list[str]:
    """SVG drawings of ``graphs``, their ids prefixed with ``uids`` to be unique on the page."""
    if not graphs:
        return []
    sideways = [across(g) for g in graphs]
    svgs = graphviz_svgs([to_dot(g, a, page=True) for g, a in zip(graphs, sideways, strict=True)])
    if svgs is None:
        return [layered_svg(g, uid, a) for g, uid, a in zip(graphs, uids, sideways, strict=True)]
    # Graphviz numbers its ids from 1 in every drawing: keep them unique on the page.
    return [
        svg.replace(' id="', f' id="{uid}-').replace("<svg ", '<svg class="lockgraph" ', 1)
        for svg, uid in zip(svgs, uids, strict=True)
    ]


def svg_width(svg: str) -> float:
    """The width in px an SVG drawing asks for (Graphviz gives points)."""
    found = re.search(r'<svg[^>]*?\swidth="([\d.]+)(pt)?"', svg)
    return 0.0 if found is None else float(found[1]) * (4 / 3 if found[2] else 1)


class Drawings:
    """The graphs of one analysed run, built once per level, and the figures drawn from them."""

    def __init__(self, state: ReplayState, analysis: Analysis) -> None:
        self.state = state
        self.analysis = analysis
        self._orderings: dict[str, Orderings] = {}

    def orderings(self, level: str) -> Orderings:
        """The ordering graph at ``level``, built once."""
        if level not in self._orderings:
            self._orderings[level] = Orderings(self.state, self.analysis, level)
        return self._orderings[level]

    def part(self, f: Finding) -> Part | None:
        """What the figure of ``f`` shows; None for findings without a cycle (anomalies)."""
        if isinstance(f, Deadlock):
            return deadlock_part(f)
        if isinstance(f, Inversion):
            o = self.orderings(f.level)
            return inversion_part(o.lock_graph(o.touching(o.ids[c] for c in f.cycle)), f)
        return None

    def findings(
        self, found: Sequence[Finding], uids: Sequence[str], width: float = REPORT_WIDTH
    ) -> list[str]:
        """A figure per finding (an empty string for an anomaly); a figure wider than
        ``width`` px with its neighbours is drawn again without them."""
        parts = [self.part(f) for f in found]
        drawn = [(i, p) for i, p in enumerate(parts) if p is not None]
        svgs = draw([p.graph for _, p in drawn], [f"{uids[i]}-cycle" for i, _ in drawn])
        wide = [k for k, (_, p) in enumerate(drawn) if p.around and svg_width(svgs[k]) > width]
        bare = [(drawn[k][0], drawn[k][1].bare()) for k in wide]
        redrawn = draw([p.graph for _, p in bare], [f"{uids[i]}-cycle" for i, _ in bare])
        for k, again, svg in zip(wide, bare, redrawn, strict=True):
            drawn[k], svgs[k] = again, svg
        out = [""] * len(found)
        for (i, p), svg in zip(drawn, svgs, strict=True):
            out[i] = _figure(found[i], p, svg)
        return out

    def graphs(self, prefix: str) -> str:
        """The whole class graph (or instance graph), plus the instance graph of
        instance-level cycles, each folded."""
        a = self.analysis
        levels = list(self.state.graphs)
        if "instance" in levels and len(levels) == 2:
            wanted = any(i.level == "instance" for i in [*a.inversions, *a.guarded])
            levels = ["class", "instance"] if wanted else ["class"]
        shown = [self.orderings(level).trimmed(MAX_GRAPH_EDGES) for level in levels]
        drawn = [g for g in shown if g.edges]
        svgs = iter(draw(drawn, [f"{prefix}-{g.level}" for g in drawn]))
        # with nothing found, the graph is all there is to see: open it
        folded = "" if a.deadlocks or a.inversions or a.guarded else " open"
        parts = []
        for g in shown:
            if not g.edges:
                parts.append(f'<p class="empty">No {g.level} ordering edges.</p>')
                continue
            cut = f", {len(g.edges)} shown" if len(g.edges) < g.total_edges else ""
            parts.append(
                f'<details class="whole"{folded}><summary>The whole {g.level} graph: '
                f"{len(g.labels)} locks, {g.total_edges} orderings{cut}</summary>"
                f'<figure class="graph whole"><div class="scroll">{next(svgs)}</div>'
                f"<figcaption>{g.level} graph: red edges close an inversion, green dashed "
                "ones a guarded cycle; labels name the function that took the second lock."
                "</figcaption></figure></details>"
            )
        return f'<section class="graphs"><h2>Lock order</h2>{"".join(parts)}</section>'


def _figure(f: Finding, part: Part, svg: str) -> str:
    if isinstance(f, Deadlock):
        what = "The locks of the deadlock: from each lock a task held to the lock it waits for"
        more = f"; the table lists the {part.left_out} other locks they held"
    else:
        colour = "green and dashed" if f.gate else "red"
        suspect = any(e.style == "suspect" for e in part.graph.edges)
        what = (
            f"The locks of this cycle ({f.level} graph): its edges in {colour}"
            + (", the suspect ordering thicker" if suspect else "")
            + ", each labelled with the function that took the second lock"
        )
        more = f"; {part.left_out} more locks ordered against these are in the whole graph"
    caption = what + (more if part.left_out else "")
    return (
        f'<figure class="cycle"><div class="scroll">{svg}</div>'
        f"<figcaption>{escape(caption)}.</figcaption></figure>"
    )
