"""lktrace export --perfetto: Chrome JSON trace events, checked by schema and by structure.

Perfetto's Python trace processor downloads its binary at run time, which this
machine cannot do; the schema below follows the Trace Event Format document
(phases X, i, s, f, M) and the structural checks are the ones the Perfetto
importer applies: complete slices nest on a track, flows pair up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest
from conftest import locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay.perfetto import OVERLAP_TID, export_perfetto
from lktrace.sim import simulate
from lktrace.trace import read_trace

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (dev extra)")

NUM = {"type": "number", "minimum": 0}
INT = {"type": "integer"}
STR = {"type": "string"}


def _phase(ph: str, required: list[str], **props) -> dict:
    return {
        "properties": {"ph": {"const": ph}, **props},
        "required": ["ph", "pid", *required],
    }


SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"pid": INT, "tid": INT, "name": STR, "cat": STR, "args": {}},
                "oneOf": [
                    _phase("X", ["name", "ts", "dur", "tid"], ts=NUM, dur=NUM),
                    _phase("i", ["name", "ts", "tid", "s"], ts=NUM, s={"enum": ["g", "p", "t"]}),
                    _phase("s", ["name", "ts", "tid", "id"], ts=NUM, id=INT),
                    _phase("f", ["name", "ts", "tid", "id"], ts=NUM, id=INT, bp={"const": "e"}),
                    _phase(
                        "M",
                        ["name", "args"],
                        name={"enum": ["process_name", "thread_name"]},
                        args={
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": STR},
                        },
                    ),
                ],
            },
        },
    },
}


def load(path) -> list[dict]:
    doc = json.loads(path.read_text(), parse_float=Decimal)  # exact ns in microseconds
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)
    return doc["traceEvents"]


def export(make_trace, rows, tmp_path) -> list[dict]:
    out = tmp_path / "t.json"
    export_perfetto(read_trace(make_trace(rows)), out)
    return load(out)


def check_nesting(events: list[dict]) -> None:
    """Complete slices on each track nest, as the viewer requires."""
    tracks = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((Decimal(e["ts"]), Decimal(e["dur"])))
    for key, slices in tracks.items():
        stack: list[Decimal] = []
        for ts, dur in sorted(slices, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= ts:
                stack.pop()
            assert not stack or ts + dur <= stack[-1], f"slice crosses its parent on {key}"
            stack.append(ts + dur)


def holds(events, **match):
    return [
        e
        for e in events
        if e["ph"] == "X" and "depth" in e["args"] and all(e[k] == v for k, v in match.items())
    ]


def test_slice_per_hold_nested_by_depth(make_trace, tmp_path):
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    events = export(make_trace, rows, tmp_path)
    check_nesting(events)
    by_name = {e["name"]: e for e in holds(events, tid=1)}
    assert by_name["A"]["args"]["depth"] == 0 and by_name["B"]["args"]["depth"] == 1
    a, b = by_name["A"], by_name["B"]
    assert a["ts"] < b["ts"] and b["ts"] + b["dur"] <= a["ts"] + a["dur"]
    # rows are 1 us apart: A acquired at 1 us, released at 5 us (trace start is 0)
    assert (a["ts"], a["dur"]) == (1, 4)
    names = {(e["name"], e["args"]["name"]) for e in events if e["ph"] == "M"}
    assert ("thread_name", "task1/1") in names


def test_hand_over_hand_goes_to_an_overlap_track(make_trace, tmp_path):
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "A") + locked(1, "C")
    rows += unlocked(1, "B") + unlocked(1, "C")
    events = export(make_trace, rows, tmp_path)
    check_nesting(events)
    assert len(holds(events)) == 3  # none dropped
    moved = holds(events, tid=1 + OVERLAP_TID)
    assert [e["name"] for e in moved] == ["B"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "task1/1 (overlapping)" in names


def test_flow_from_releaser_to_the_waiter_it_unblocked(make_trace, tmp_path):
    rows = [*locked(5, "C"), (6, "attempt", "C"), *unlocked(5, "C"), (6, "acquired", "C")]
    rows += unlocked(6, "C")
    # task 7 asks for C only after task 6 let it go: no flow to it
    rows += locked(7, "C") + unlocked(7, "C")
    events = export(make_trace, rows, tmp_path)
    flows = [e for e in events if e["ph"] in "sf"]
    assert sorted(e["ph"] for e in flows) == ["f", "s"]
    s, f = sorted(flows, key=lambda e: e["ph"], reverse=True)
    assert s["id"] == f["id"] and (s["tid"], f["tid"]) == (5, 6)
    # each end sits inside a slice of its task: the releaser's hold, the waiter's hold
    for end, task in ((s, 5), (f, 6)):
        [h] = [h for h in holds(events, tid=task) if h["ts"] <= end["ts"] <= h["ts"] + h["dur"]]
        assert h["name"] == "C"
    [wait] = [e for e in events if e["ph"] == "X" and e["name"] == "wait C" and e["tid"] == 6]
    assert wait["ts"] + wait["dur"] == f["ts"] - Decimal("0.001")


def test_attempts_never_granted_are_instants(make_trace, tmp_path):
    rows = locked(1, "A") + locked(2, "B") + [(1, "attempt", "B"), (2, "attempt", "A")]
    events = export(make_trace, rows, tmp_path)
    instants = {(e["tid"], e["name"]) for e in events if e["ph"] == "i"}
    assert instants == {(1, "never granted: B"), (2, "never granted: A")}


@pytest.mark.parametrize("scenario", ["stock-deadlock", "patched"])
def test_simulated_scenarios(tmp_path, scenario):
    trace = simulate(scenario, tmp_path / "t.parquet")
    out = tmp_path / "t.json"
    n = export_perfetto(read_trace(trace), out)
    events = load(out)
    assert len(events) == n
    check_nesting(events)
    ids = defaultdict(list)
    for e in events:
        if e["ph"] in "sf":
            ids[e["id"]].append(e["ph"])
    assert all(sorted(v) == ["f", "s"] for v in ids.values())
    if scenario == "stock-deadlock":
        assert sum(e["ph"] == "i" for e in events) == 2


def test_scale_trace_streams_and_nests(tmp_path):
    trace = read_trace(simulate("scale", tmp_path / "s.parquet", events=40_000))
    out = tmp_path / "s.json"
    n = export_perfetto(trace, out)
    events = load(out)
    assert len(events) == n
    check_nesting(events)
    # one slice per acquisition: every granted lock shows up
    granted = sum(v == "acquired" for v in trace.table["event"].to_pylist())
    assert len(holds(events)) == granted
    assert any(e["tid"] >= OVERLAP_TID for e in events if e["ph"] == "X")  # non-LIFO releases


def test_cli(make_trace, tmp_path):
    path = make_trace(locked(1, "A") + unlocked(1, "A"))
    runner = CliRunner()
    out = tmp_path / "o.json"
    ok = runner.invoke(app, ["export", "--perfetto", str(path), "-o", str(out)])
    assert ok.exit_code == 0 and out.exists()
    assert len(load(out)) > 0
    no_format = runner.invoke(app, ["export", str(path), "-o", str(out)], catch_exceptions=True)
    assert no_format.exit_code != 0


def test_empty_trace_gives_an_empty_valid_file(make_trace, tmp_path):
    out = tmp_path / "e.json"
    assert export_perfetto(read_trace(make_trace([])), out) == 0
    assert load(out) == []
