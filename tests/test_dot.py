"""lktrace analyze --format dot: the ordering graph for Graphviz."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay.analyze import Options
from lktrace.replay.dot import analyze_dot, function
from lktrace.sim import simulate
from lktrace.trace import read_trace

EDGE = re.compile(r"n(\d+) -> n(\d+) \[(.*)\];")
NODE = re.compile(r'^  n(\d+) \[label="([^"]*)"', re.M)


def ab(tid, a, b):
    return locked(tid, a) + locked(tid, b) + unlocked(tid, b) + unlocked(tid, a)


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(node id -> label, (src label, dst label) -> attributes) of our DOT output."""
    nodes = {m[1]: m[2] for m in NODE.finditer(text)}
    edges = {(nodes[m[1]], nodes[m[2]]): m[3] for m in EDGE.finditer(text)}
    return nodes, edges


def test_function_drops_offsets():
    assert function("device_release_driver+0x4a/0x1c0") == "device_release_driver"
    assert function("remove_store") == "remove_store"


def test_inverted_edges_are_red_and_labelled_with_the_witness(make_trace):
    path = make_trace(ab(1, "A", "B") + ab(2, "B", "A") + ab(3, "A", "C"))
    text, analysis = analyze_dot([read_trace(path)], Options())
    _, edges = parse(text)
    assert set(edges) == {("A", "B"), ("B", "A"), ("A", "C")}
    for key in (("A", "B"), ("B", "A")):
        assert 'color="#c62828"' in edges[key]
    assert "#c62828" not in edges[("A", "C")]
    # the label is the function that attempted the second lock, offset dropped
    [inv] = analysis.inversions
    for w in inv.edges:
        assert f'label="{function(w.caller)}"' in edges[(w.src, w.dst)]
        assert "+0x" not in edges[(w.src, w.dst)]


def test_guarded_cycle_is_green_and_dashed(make_trace):
    def gated(tid, a, b):
        return locked(tid, "G") + ab(tid, a, b) + unlocked(tid, "G")

    text, _ = analyze_dot(
        [read_trace(make_trace(gated(1, "A", "B") + gated(2, "B", "A")))], Options()
    )
    _, edges = parse(text)
    assert "dashed" in edges[("A", "B")] and "#2e7d32" in edges[("A", "B")]
    assert "dashed" not in edges[("G", "A")]


def test_repeated_order_shows_its_count(make_trace):
    text, _ = analyze_dot([read_trace(make_trace(ab(1, "A", "B") * 3))], Options())
    _, edges = parse(text)
    assert "\u00d73" in edges[("A", "B")]


def test_instance_level_shows_device_locks(make_trace):
    pf, vf = "pci:0000:01:00.0", "pci:0000:01:00.1"
    path = read_trace(make_trace(ab(1, pf, vf) + ab(2, vf, pf)))
    text, _ = analyze_dot([path], Options(level="class"))
    assert "->" not in text  # no device_lock self-loop at the class level
    text, _ = analyze_dot([path], Options(level="instance"))
    _, edges = parse(text)
    assert set(edges) == {(pf, vf), (vf, pf)}
    assert all("#c62828" in a for a in edges.values())


def test_cli_dot_exit_code(make_trace):
    runner = CliRunner()
    bad = runner.invoke(
        app, ["analyze", "-f", "dot", str(make_trace(ab(1, "A", "B") + ab(2, "B", "A")))]
    )
    assert bad.exit_code == 1 and bad.stdout.startswith("digraph")
    good = runner.invoke(
        app, ["analyze", "-f", "dot", str(make_trace(ab(1, "A", "B"), "ok.parquet"))]
    )
    assert good.exit_code == 0 and "->" in good.stdout


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("scenario", ["stock-deadlock", "patched"])
def test_graphviz_parses_it(tmp_path, scenario):
    trace = read_trace(simulate(scenario, tmp_path / "t.parquet"))
    for level in ("class", "instance"):
        text, analysis = analyze_dot([trace], Options(level=level))
        proc = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # no syntax warnings either
        svg = proc.stdout
        for inv in analysis.inversions:
            for lock in inv.cycle:
                assert f">{lock}</text>" in svg
