"""The pure-Python graph layout used when Graphviz is missing, and graph trimming."""

from __future__ import annotations

import itertools
import re

import pytest
from conftest import locked, unlocked

from lktrace.replay.dot import Edge, LockGraph, lock_graph
from lktrace.replay.layout import LABEL_CHAR_W, layered_svg
from lktrace.replay.report import build_page
from lktrace.trace import read_trace

RECT = re.compile(
    r'<g class="node[^"]*"><title>([^<]*)</title><rect x="([\d.]+)" y="([\d.]+)" '
    r'width="([\d.]+)" height="([\d.]+)"'
)


def graph() -> LockGraph:
    labels = {0: "A", 1: "B", 2: "C", 3: "pci_rescan_remove_lock", 4: "device_lock", 5: "D"}
    edges = [
        Edge(0, 1, "f_ab", 1, "inverted"),
        Edge(1, 2, "f_bc", 3, "inverted"),
        Edge(2, 0, "f_ca", 1, "inverted"),
        Edge(3, 4, "device_release_driver_internal", 36, "inverted"),
        Edge(4, 3, "sriov_del_vfs", 5, "inverted"),
        Edge(0, 5, "f_ad", 2),
        Edge(3, 5, "f_rd", 1),
    ]
    return LockGraph("class", labels, edges, {n: "inverted" for n in range(5)}, len(edges))


@pytest.mark.parametrize("across", [False, True], ids=["top-down", "left-to-right"])
def test_every_lock_and_edge_is_drawn_without_overlaps(across):
    g = graph()
    svg = layered_svg(g, "t", across)
    rects = {m[1]: tuple(float(v) for v in m.groups()[1:]) for m in RECT.finditer(svg)}
    assert set(rects) == set(g.labels.values())
    # edge labels as boxes too: LABEL_CHAR_W per glyph, from the baseline up 9 px
    for m in re.finditer(r'<text class="elabel" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)<', svg):
        x, y = float(m[1]), float(m[2])
        rects[m[3]] = (x, y - 9, LABEL_CHAR_W * len(m[3]), 11)
    for (a, (x1, y1, w1, h1)), (b, (x2, y2, w2, h2)) in itertools.combinations(rects.items(), 2):
        apart = x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
        assert apart, f"{a} overlaps {b}"
    assert svg.count('<g class="edge') == len(g.edges)
    assert svg.count('<g class="edge inverted">') == 5
    for e in g.edges:
        label = e.label + (f" \u00d7{e.count}" if e.count > 1 else "")
        assert f">{label}</text>" in svg
    # the two edges of the AB-BA pair run apart: their label positions differ
    xs = re.findall(r'<text class="elabel" x="([\d.]+)" y="([\d.]+)"', svg)
    assert len(set(xs)) == len(xs)


def test_cycles_are_drawn_top_down_with_one_edge_back_up():
    svg = layered_svg(graph(), "t")
    y = {m[1]: float(m[3]) for m in RECT.finditer(svg)}
    assert y["A"] < y["B"] < y["C"]  # the 3-cycle is ranked, its closing edge goes up
    svg = layered_svg(graph(), "t", across=True)
    x = {m[1]: float(m[2]) for m in RECT.finditer(svg)}
    assert x["A"] < x["B"] < x["C"]  # or left to right


def test_trimmed_graph_keeps_inversions_first(make_trace):
    rows = []
    for i in range(12):  # a chain of orders nobody inverts
        rows += locked(1, f"L{i}") + locked(1, f"L{i + 1}") + unlocked(1, f"L{i + 1}")
        rows += unlocked(1, f"L{i}")
    rows += locked(2, "X") + locked(2, "Y") + unlocked(2, "Y") + unlocked(2, "X")
    rows += locked(3, "Y") + locked(3, "X") + unlocked(3, "X") + unlocked(3, "Y")
    page = build_page([read_trace(make_trace(rows))])
    g = lock_graph(page.state, page.analysis, "class", max_edges=3)
    assert g.total_edges == 14 and len(g.edges) == 3
    kept = {(g.labels[e.src], g.labels[e.dst]) for e in g.edges}
    assert {("X", "Y"), ("Y", "X")} <= kept
