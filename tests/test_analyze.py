"""lktrace analyze on small hand-built traces: one finding kind at a time."""

from __future__ import annotations

import json
import random

import pytest
from conftest import build_columns, locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay.analyze import Options, analyze
from lktrace.trace import TraceMeta, read_trace, write_trace


def run(make_trace, rows, **opts):
    return analyze([read_trace(make_trace(rows))], Options(**opts))


def ab(tid, a, b):
    """Task ``tid`` takes ``a`` then ``b`` and lets both go."""
    return locked(tid, a) + locked(tid, b) + unlocked(tid, b) + unlocked(tid, a)


def test_ab_ba_predicted(make_trace):
    result = run(make_trace, ab(1, "A", "B") + ab(2, "B", "A"))
    assert not result.deadlocks
    [inv] = result.inversions
    assert inv.level == "class" and sorted(inv.cycle) == ["A", "B"]
    assert not inv.deadlocked and not inv.same_task
    assert {(w.src, w.dst, w.tid) for w in inv.edges} == {("A", "B", 1), ("B", "A", 2)}
    assert result.problems == 1


def test_consistent_order_is_clean(make_trace):
    result = run(make_trace, ab(1, "A", "B") + ab(2, "A", "B"))
    assert result.problems == 0
    assert not result.inversions and not result.anomalies
    assert result.summary["edges"] == 1


def test_deadlock_happened(make_trace):
    rows = locked(1, "A") + locked(2, "B") + [(1, "attempt", "B"), (2, "attempt", "A")]
    result = run(make_trace, rows)
    [dl] = result.deadlocks
    waits = {t.tid: (t.waits_for.lock_name, [h.lock_name for h in t.holds]) for t in dl.tasks}
    assert waits == {1: ("B", ["A"]), 2: ("A", ["B"])}
    [inv] = result.inversions
    assert inv.deadlocked
    # the witnesses are the blocked attempts themselves
    assert {w.ts_ns for w in inv.edges} == {t.waits_for.since_ns for t in dl.tasks}
    assert not [a for a in result.anomalies if a.kind == "held_at_end"]


def test_three_lock_cycle_across_three_tasks(make_trace):
    result = run(make_trace, ab(1, "A", "B") + ab(2, "B", "C") + ab(3, "C", "A"))
    [inv] = result.inversions
    assert len(inv.cycle) == 3 and set(inv.cycle) == {"A", "B", "C"}
    assert [t["tid"] for t in inv.tasks] == [1, 2, 3]
    assert [(w.src, w.dst) for w in inv.edges] == list(
        zip(inv.cycle, inv.cycle[1:] + inv.cycle[:1], strict=True)
    )


def test_gate_lock_guards_cycle(make_trace):
    def gated(tid, a, b):
        return locked(tid, "G") + ab(tid, a, b) + unlocked(tid, "G")

    result = run(make_trace, gated(1, "A", "B") + gated(2, "B", "A"))
    assert not result.inversions
    [g] = result.guarded
    assert g.gate == "G" and sorted(g.cycle) == ["A", "B"]
    assert result.problems == 0


def test_gate_must_cover_every_occurrence(make_trace):
    def gated(tid, a, b):
        return locked(tid, "G") + ab(tid, a, b) + unlocked(tid, "G")

    result = run(make_trace, gated(1, "A", "B") + gated(2, "B", "A") + ab(3, "B", "A"))
    assert len(result.inversions) == 1 and not result.guarded


def test_device_locks_judged_on_instances(make_trace):
    pf, vf = "pci:0000:01:00.0", "pci:0000:01:00.1"
    parent_first = run(make_trace, ab(1, pf, vf) + ab(2, pf, vf))
    assert parent_first.problems == 0 and parent_first.summary["edges"] == 0  # no class self-loop
    both_ways = analyze([read_trace(make_trace(ab(1, pf, vf) + ab(2, vf, pf), "b.parquet"))])
    [inv] = both_ways.inversions
    assert inv.level == "instance" and sorted(inv.cycle) == [pf, vf]
    assert {w.src_class for w in inv.edges} == {"device_lock"}


def test_trylock_in_reverse_order_adds_no_edge(make_trace):
    rows = (
        ab(1, "A", "B")
        + locked(2, "B")
        + [
            (2, "attempt", "A", "mutex_trylock"),
            (2, "acquired", "A", "mutex_trylock"),
        ]
        + unlocked(2, "A")
        + unlocked(2, "B")
    )
    result = run(make_trace, rows)
    assert result.problems == 0 and result.summary["edges"] == 1


def test_trylock_holds_count_for_later_attempts(make_trace):
    rows = [(1, "attempt", "A", "mutex_trylock"), (1, "acquired", "A", "mutex_trylock")]
    rows += locked(1, "B") + unlocked(1, "B") + unlocked(1, "A") + ab(2, "B", "A")
    assert len(run(make_trace, rows).inversions) == 1


def test_rows_out_of_time_order_give_the_same_result(make_trace, tmp_path):
    rows = ab(1, "A", "B") + ab(2, "B", "C") + ab(3, "C", "A") + locked(4, "A")
    cols = build_columns(rows)
    order = list(range(len(rows)))
    random.Random(7).shuffle(order)
    shuffled = {k: [v[i] for i in order] for k, v in cols.items()}
    path = write_trace(tmp_path / "shuffled.parquet", shuffled, TraceMeta())
    a = analyze([read_trace(make_trace(rows))]).to_dict()
    b = analyze([read_trace(path)]).to_dict()
    assert without_files(a) == without_files(b)


def without_files(doc):
    """``doc`` without the file names (the two traces live in different files)."""
    if isinstance(doc, dict):
        return {k: without_files(v) for k, v in doc.items() if k not in ("file", "trace")}
    if isinstance(doc, list):
        return [without_files(v) for v in doc]
    return doc


def test_foreign_release(make_trace):
    result = run(make_trace, locked(1, "R") + unlocked(2, "R"))
    kinds = {(a.kind, a.tid) for a in result.anomalies}
    assert ("foreign_release", 2) in kinds
    [foreign] = [a for a in result.anomalies if a.kind == "foreign_release"]
    assert "task1/1" in foreign.detail


def test_held_before_start_is_not_an_error(make_trace):
    result = run(make_trace, unlocked(1, "R") + ab(1, "A", "B"))
    assert [a.kind for a in result.anomalies] == ["held_before_start"]
    assert result.problems == 0


def test_lock_held_before_start_orders_what_came_under_it(make_trace):
    rows = locked(1, "B") + unlocked(1, "B") + unlocked(1, "A") + ab(2, "B", "A")
    result = run(make_trace, rows)
    assert len(result.inversions) == 1


def test_unbalanced_release(make_trace):
    result = run(make_trace, locked(1, "A") + unlocked(1, "A") + unlocked(1, "A"))
    assert [a.kind for a in result.anomalies] == ["unbalanced_release"]
    assert result.problems == 1


def test_self_deadlock(make_trace):
    rows = [*locked(1, "R"), (1, "attempt", "R")]
    result = run(make_trace, rows)
    [sd] = [a for a in result.anomalies if a.kind == "self_deadlock"]
    assert sd.tid == 1 and sd.depth == 2
    # it is also a deadlock that happened: one task, waiting for itself
    [d] = result.deadlocks
    assert [(t.tid, t.waits_on_tid, t.waits_for.lock_class) for t in d.tasks] == [(1, 1, "R")]


def test_reentrant_and_depth_exceeded(make_trace):
    rows = locked(1, "R") + locked(1, "R") + unlocked(1, "R") + unlocked(1, "R")
    [re] = run(make_trace, rows).anomalies
    assert (re.kind, re.depth) == ("reentrant", 2)
    [deep] = analyze([read_trace(make_trace(rows, "d.parquet"))], Options(max_depth=1)).anomalies
    assert deep.kind == "depth_exceeded"


def test_held_at_end(make_trace):
    result = run(make_trace, locked(1, "A") + ab(2, "B", "C"))
    [held] = result.anomalies
    assert (held.kind, held.tid, held.lock_name) == ("held_at_end", 1, "A")
    assert result.problems == 0


def test_same_task_inversion_is_marked(make_trace):
    [inv] = run(make_trace, ab(1, "A", "B") + ab(1, "B", "A")).inversions
    assert inv.same_task


def test_address_reused_by_another_device(make_trace, tmp_path):
    # one address, first PF's lock, later (hot-unplug, re-add) another device's
    rows = ab(1, "pci:0000:01:00.0", "pci:0000:02:00.0") + ab(2, "pci:0000:02:00.0", "X")
    cols = build_columns(rows)
    cols["lock_addr"] = [
        0xFFFF888000001000 if n.startswith("pci") else a
        for n, a in zip(cols["lock_name"], cols["lock_addr"], strict=True)
    ]
    path = write_trace(tmp_path / "reuse.parquet", cols, TraceMeta())
    result = analyze([read_trace(path)])
    assert result.summary["locks"] == 3 and not result.inversions


def test_several_traces_merge_by_name(make_trace):
    a = make_trace(ab(1, "A", "B"), "a.parquet")
    b = make_trace(ab(1, "B", "A"), "b.parquet")
    result = analyze([read_trace(a), read_trace(b)])
    [inv] = result.inversions
    assert {w.file for w in inv.edges} == {str(a), str(b)}
    assert not inv.same_task  # tid 1 of two boots are two tasks


def test_filters(make_trace):
    rows = ab(1, "A", "B") + ab(2, "B", "A")
    path = make_trace(rows)
    assert not analyze([read_trace(path)], Options(tids={1})).inversions
    assert not analyze([read_trace(path)], Options(comms={"task2"})).inversions
    assert not analyze([read_trace(path)], Options(classes={"C"})).inversions
    assert analyze([read_trace(path)], Options(level="instance")).inversions[0].level == "instance"
    assert not analyze([read_trace(path)], Options(until_s=6e-6)).inversions


def test_cli_json_and_exit_codes(make_trace):
    runner = CliRunner()
    bad = runner.invoke(
        app, ["analyze", "--format", "json", str(make_trace(ab(1, "A", "B") + ab(2, "B", "A")))]
    )
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout)
    assert set(doc) >= {"trace", "summary", "inversions", "guarded", "deadlocks", "anomalies"}
    edge = doc["inversions"][0]["edges"][0]
    assert set(edge) >= {
        "from",
        "to",
        "from_name",
        "to_name",
        "tid",
        "comm",
        "ts_ns",
        "stack",
        "held_stack",
    }
    good = runner.invoke(app, ["analyze", str(make_trace(ab(1, "A", "B"), "ok.parquet"))])
    assert good.exit_code == 0 and "No lock-order inversions" in good.stdout


@pytest.mark.parametrize("args", [["--level", "bogus"], ["--format", "xml"]])
def test_cli_usage_errors(make_trace, args):
    import subprocess
    import sys

    path = make_trace(ab(1, "A", "B"))
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "analyze", str(path), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "lktrace:" in proc.stderr


def test_reentry_under_another_lock_adds_no_edge(make_trace):
    # R, then D under it, then R again (reentrant): no D -> R order, so no inversion with
    # a task that takes R then D
    pf = "pci:0000:01:00.0"
    rows = locked(1, "R") + locked(1, pf) + locked(1, "R") + unlocked(1, "R")
    rows += unlocked(1, pf) + unlocked(1, "R") + ab(2, "R", pf)
    result = run(make_trace, rows)
    assert not result.inversions and result.summary["edges"] == 1
    assert [a.kind for a in result.anomalies] == ["reentrant"]


def test_empty_trace(make_trace):
    result = run(make_trace, [])
    assert result.problems == 0 and result.summary["events"] == 0


def test_trace_without_releases_is_bounded(make_trace):
    # the tracepoint backend: contended acquisitions only, never a release
    rows = []
    for _ in range(300):
        rows += locked(1, "A") + locked(1, "B") + locked(2, "B") + locked(2, "A")
    result = analyze([read_trace(make_trace(rows, extra={"releases": "no"}))])
    assert result.summary["edges"] == 0
    assert not result.inversions and not result.anomalies
    assert any("no release events" in n for n in result.notes)
