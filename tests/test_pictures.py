"""Readable pictures: each finding's own figure, the whole graph folded, measured in Chromium.

The real 6.1 deadlock trace has two locks on its cycle and 19 more ordered
against both: drawn whole and scaled to the page its labels were 3 px tall.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import FIGURES, measured, needs_chromium
from conftest import locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay.dot import Edge, LockGraph
from lktrace.replay.layout import across, layered_svg
from lktrace.replay.report import build_page, render_html
from lktrace.replay.subgraph import NEIGHBOURS, deadlock_part
from lktrace.sim import simulate
from lktrace.trace import read_trace

LAB = Path(__file__).parent / "data" / "lab"
REAL = LAB / "6.1.0-56-amd64" / "rootport-remove-vs-numvfs.parquet"
REAL_612 = LAB / "6.12.117+deb12-amd64" / "rootport-remove-vs-numvfs.parquet"
MIN_LABEL_PX = 11
WINDOW = 1200


def ab(tid: int, a: str, b: str) -> list:
    return locked(tid, a) + locked(tid, b) + unlocked(tid, b) + unlocked(tid, a)


@pytest.fixture(scope="module")
def real_page():
    return build_page([read_trace(REAL)])


# -- what each figure shows ---------------------------------------------------


def test_real_inversion_figure_holds_its_cycle_and_counts_the_rest(real_page):
    a = real_page.analysis
    [inv] = a.inversions
    whole = real_page.drawings.orderings("class").lock_graph()
    part = real_page.drawings.part(inv)
    assert set(part.graph.labels.values()) == set(inv.cycle)  # 19 neighbours: too many
    assert part.left_out == len(whole.labels) - 2 == 19
    own = {(part.graph.labels[e.src], part.graph.labels[e.dst]): e for e in part.graph.edges}
    assert set(own) == {(w.src, w.dst) for w in inv.edges}
    assert all(e.style == "inverted" for e in own.values())
    [d] = a.deadlocks
    dl = deadlock_part(d).graph
    assert set(dl.labels.values()) == {
        "device_lock pci:0000:01:00.0",
        "pci_rescan_remove_lock",
    }
    assert sorted(e.label for e in dl.edges) == sorted(f"{t.comm}/{t.tid}" for t in d.tasks)


def test_few_neighbours_are_drawn_and_a_gate_always(make_trace):
    rows = ab(1, "A", "B") + ab(2, "B", "A") + ab(3, "A", "C") + ab(4, "D", "B")
    page = build_page([read_trace(make_trace(rows))])
    [inv] = page.analysis.inversions
    part = page.drawings.part(inv)
    assert set(part.graph.labels.values()) == {"A", "B", "C", "D"} and part.left_out == 0
    styles = {
        (part.graph.labels[e.src], part.graph.labels[e.dst]): e.style for e in part.graph.edges
    }
    assert styles == {
        ("A", "B"): "inverted",
        ("B", "A"): "inverted",
        ("A", "C"): "",
        ("D", "B"): "",
    }

    def gated(tid, a, b):
        return locked(tid, "G") + ab(tid, a, b) + unlocked(tid, "G")

    rows = gated(1, "A", "B") + gated(2, "B", "A")
    rows += [r for i in range(NEIGHBOURS + 1) for r in ab(3, "A", f"N{i}")]
    page = build_page([read_trace(make_trace(rows, "gated.parquet"))])
    [inv] = page.analysis.guarded
    part = page.drawings.part(inv)
    assert set(part.graph.labels.values()) == {"A", "B", "G"}  # the gate, not the crowd
    assert part.left_out == NEIGHBOURS + 1
    assert {e.style for e in part.graph.edges if e.src != e.dst} >= {"guarded", ""}


def test_report_draws_a_figure_per_finding_and_folds_the_whole_graph(real_page, renderer):
    html = render_html(real_page)
    figures = re.findall(r'<figure class="cycle">.*?</figure>', html, re.S)
    assert len(figures) == 2
    assert "19 more locks ordered against these are in the whole graph" in figures[1]
    [whole] = re.findall(r"<details class=\"whole\">(.*?)</details>", html, re.S)
    assert "The whole class graph: 21 locks, 39 orderings" in whole
    assert whole.count("mutex@") >= 19


def test_a_clear_suspect_is_drawn_thicker(make_trace, renderer):
    rows = ab(1, "A", "B") * 12 + ab(2, "B", "C") * 12 + ab(3, "C", "A")
    page = build_page([read_trace(make_trace(rows))])
    [inv] = page.analysis.inversions
    assert inv.suspect.clear and (inv.suspect.src, inv.suspect.dst) == ("C", "A")
    g = page.drawings.part(inv).graph
    styles = {(g.labels[e.src], g.labels[e.dst]): (e.style, e.label) for e in g.edges}
    assert styles[("C", "A")][0] == "suspect" and styles[("C", "A")][1].startswith("suspect: ")
    assert styles[("A", "B")][0] == styles[("B", "C")][0] == "inverted"
    [figure] = re.findall(r'<figure class="cycle">.*?</figure>', render_html(page), re.S)
    assert "the suspect ordering thicker" in figure and ">suspect: " in figure.replace("> ", ">")
    # both orders common: no suspect drawn
    rows = ab(1, "A", "B") * 3 + ab(2, "B", "A") * 2
    page = build_page([read_trace(make_trace(rows, "both.parquet"))])
    [inv] = page.analysis.inversions
    assert not inv.suspect.clear
    assert {e.style for e in page.drawings.part(inv).graph.edges} == {"inverted"}


def test_with_nothing_found_the_whole_graph_is_open(make_trace):
    html = render_html(build_page([read_trace(make_trace(ab(1, "A", "B") + ab(2, "A", "C")))]))
    assert '<details class="whole" open>' in html and '<figure class="cycle">' not in html


def test_a_wide_graph_is_drawn_left_to_right():
    hub = {0: "device_lock", **{i: f"mutex@leaf_function_{i}" for i in range(1, 20)}}
    star = LockGraph("class", hub, [Edge(0, i, f"f{i}", 2) for i in range(1, 20)])
    pair = LockGraph("class", {0: "A", 1: "B"}, [Edge(0, 1, "f", 1), Edge(1, 0, "g", 1)])
    assert across(star) and not across(pair)
    top_down = re.search(r'width="(\d+)" height="(\d+)"', layered_svg(star))
    sideways = re.search(r'width="(\d+)" height="(\d+)"', layered_svg(star, across=True))
    assert int(top_down[1]) > 4 * int(top_down[2])
    assert int(sideways[2]) > int(sideways[1])


# -- in the browser -----------------------------------------------------------


def assert_readable(fig: dict, locks: set[str], right_edge: float) -> None:
    """Every lock label of ``fig`` is drawn, tall enough, and visible without scrolling."""
    drawn = {n["text"]: n for n in fig["nodes"]}
    assert locks <= set(drawn), (locks, set(drawn))
    left, _, right, _ = fig["box"]
    for n in fig["nodes"]:
        x0, y0, x1, y1 = n["box"]
        assert y1 - y0 >= MIN_LABEL_PX and n["font"] >= MIN_LABEL_PX, n
        assert left <= x0 and x1 <= min(right, right_edge), (n, fig["box"])


@needs_chromium
def test_cycle_labels_are_readable_on_the_real_deadlock(tmp_path, real_page, renderer):
    m = measured(tmp_path, render_html(real_page), FIGURES, WINDOW)
    assert m["width"] == WINDOW
    [dl, inv] = m["cycles"]
    [d] = real_page.analysis.deadlocks
    [found] = real_page.analysis.inversions
    assert_readable(dl, {"device_lock pci:0000:01:00.0", "pci_rescan_remove_lock"}, WINDOW)
    assert_readable(inv, set(found.cycle), WINDOW)
    assert {e["text"] for e in dl["edges"]} == {f"{t.comm}/{t.tid}" for t in d.tasks}
    assert all(e["font"] >= 9 for e in inv["edges"])  # edge labels: the page's small print
    [whole] = m["whole"]
    assert whole["folded"] and whole["zoom"] == 4
    # opened, the whole graph keeps its natural size: labels as tall, the box scrolls
    assert len(whole["nodes"]) == 21
    assert min(n["font"] for n in whole["nodes"]) >= MIN_LABEL_PX
    assert whole["svg"][2] > whole["box"][2] or whole["svg"][3] > whole["box"][3]
    drawn, box = whole["fitted"]
    assert abs(drawn - box) < 2  # "fit width" zooms it to the box


@needs_chromium
@pytest.mark.parametrize("pair", ["real", "simulated"])
def test_cycle_labels_are_readable_on_a_diff_page(tmp_path, renderer, pair):
    if pair == "real":  # the same deadlock on 6.1 and 6.12
        old, new, figures = REAL, REAL_612, 4
    else:  # stock kernel vs the v14 patch: the deadlock is gone, the inversion stays
        old = simulate("stock-deadlock", tmp_path / "stock.parquet")
        new = simulate("patched", tmp_path / "patched.parquet")
        figures = 3
    result = CliRunner().invoke(app, ["diff", "--format", "html", str(old), str(new)])
    assert result.exit_code in (0, 1), result.output
    m = measured(tmp_path, result.stdout, FIGURES, WINDOW)
    assert len({tuple(c["column"]) for c in m["cycles"]}) == 2
    assert len(m["cycles"]) == figures
    for fig in m["cycles"]:
        locks = {n["text"] for n in fig["nodes"]}
        assert "pci_rescan_remove_lock" in locks
        assert_readable(fig, locks, min(fig["column"][2], WINDOW))
    assert len(m["whole"]) == 2 and all(w["folded"] for w in m["whole"])
