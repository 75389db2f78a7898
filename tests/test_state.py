"""The replay state: built once, read by every finder and every output without change."""

from __future__ import annotations

import json

from conftest import locked, unlocked

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.dot import lock_graph, to_dot
from lktrace.replay.state import Filters, replay
from lktrace.trace import read_trace


def ab(tid, a, b):
    return locked(tid, a) + locked(tid, b) + unlocked(tid, b) + unlocked(tid, a)


def test_analysis_twice_on_one_state_is_the_same(make_trace):
    rows = ab(1, "A", "B") + ab(2, "B", "A")
    path = make_trace(rows, lost_events=3)
    state = replay([read_trace(path)], Filters())
    first = analysis(state, Options())
    second = analysis(state, Options())
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    assert len([n for n in second.notes if "events were lost" in n]) == 1
    # judging options differ per call; the state stays as it was
    assert not analysis(state, Options(classes={"Z"})).inversions
    assert len(analysis(state, Options()).inversions) == 1


def test_state_holds_both_levels_and_first_witnesses(make_trace):
    state = replay([read_trace(make_trace(ab(1, "A", "B") * 3 + ab(2, "B", "C")))])
    assert set(state.graphs) == {"class", "instance"}
    g = state.graphs["class"]
    edges = {
        (g.labels[s], g.labels[d]): int(n) for s, d, n in zip(g.src, g.dst, g.count, strict=True)
    }
    assert edges == {("A", "B"): 3, ("B", "C"): 1}
    ab_edge = int(g.find([g.labels.index("A")], [g.labels.index("B")])[0])
    first = state.witness("class", int(g.edge_occurrences(ab_edge)[0]))
    later = state.witness("class", int(g.edge_occurrences(ab_edge)[-1]))
    assert first.ts_ns < later.ts_ns and first.tid == 1
    assert g.find([g.labels.index("B")], [g.labels.index("A")]).tolist() == [-1]
    assert g.first_pairs[ab_edge] == g.edge_occurrences(ab_edge)[0]


def test_state_holds_waits_holds_and_nesting(make_trace):
    rows = locked(1, "A") + locked(1, "A") + unlocked(1, "A") + unlocked(1, "A") + locked(2, "B")
    state = replay([read_trace(make_trace(rows))])
    ev = state.events
    deepest = {ev.names[ev.inst_name[i]]: int(d) for i, d in enumerate(state.deepest)}
    assert deepest == {"A": 2, "B": 1}
    assert (state.wait_ns == 1000).all()  # conftest: events 1 us apart
    [held] = state.held_at_end.tolist()
    assert ev.names[ev.inst_name[state.holds.inst[held]]] == "B"
    assert sorted(state.hold_ns.tolist()) == [0, 1000, 4000]  # B: held to the end


def test_filters_apply_once_for_every_output(make_trace):
    path = make_trace(ab(1, "A", "B") + ab(2, "B", "A"))
    state = replay([read_trace(path)], Filters(tids={1}, level="class"))
    assert list(state.graphs) == ["class"]
    found = analysis(state, Options())
    g = lock_graph(state, found, "class")
    assert [(g.labels[e.src], g.labels[e.dst]) for e in g.edges] == [("A", "B")]
    assert "->" in to_dot(g) and not found.inversions


def test_export_does_not_build_the_graphs(make_trace):
    state = replay([read_trace(make_trace(ab(1, "A", "B")))])
    assert len(state.holds.task) == 2 and not len(state.replay.pending)
    assert "graphs" not in vars(state) and "pairs" not in vars(state)
