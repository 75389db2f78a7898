"""lktrace analyze on the simulator's SR-IOV scenarios: the findings a kernel engineer expects."""

from __future__ import annotations

import pytest

from lktrace.replay.analyze import Options, analyze
from lktrace.sim import simulate
from lktrace.trace import read_trace

RESCAN = "pci_rescan_remove_lock"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    cache: dict = {}

    def run(name: str, **opts):
        if name not in cache:
            cache[name] = simulate(name, tmp_path_factory.mktemp(name) / f"{name}.parquet")
        return analyze([read_trace(cache[name])], Options(**opts))

    return run


def functions(frames: list[str]) -> set[str]:
    return {f.split("+", 1)[0] for f in frames}


def test_stock_deadlock(scenario):
    result = scenario("stock-deadlock")
    [dl] = result.deadlocks
    waits = {t.waits_for.lock_class for t in dl.tasks}
    assert waits == {"device_lock", RESCAN}
    holds = {t.waits_for.lock_class: {h.lock_class for h in t.holds} for t in dl.tasks}
    assert RESCAN in holds["device_lock"] and "device_lock" in holds[RESCAN]
    entry = {t.waits_for.lock_class: functions(t.waits_for.stack) for t in dl.tasks}
    assert "remove_store" in entry["device_lock"] and "unbind_store" in entry[RESCAN]
    [inv] = [i for i in result.inversions if set(i.cycle) == {"device_lock", RESCAN}]
    assert inv.deadlocked and inv.level == "class" and not inv.same_task


def test_stock_sequential_predicts_without_hanging(scenario):
    result = scenario("stock-sequential")
    assert not result.deadlocks
    [inv] = [i for i in result.inversions if set(i.cycle) == {"device_lock", RESCAN}]
    assert not inv.deadlocked
    by_edge = {(w.src, w.dst): functions(w.stack) | functions(w.held_stack) for w in inv.edges}
    assert "remove_store" in by_edge[(RESCAN, "device_lock")]
    assert "unbind_store" in by_edge[("device_lock", RESCAN)]


def test_stock_self_deadlock(scenario):
    result = scenario("stock-selfdeadlock")
    [sd] = [a for a in result.anomalies if a.kind == "self_deadlock"]
    assert sd.lock_class == RESCAN and sd.depth == 2
    assert result.problems >= 1


def test_patched_kernel(scenario):
    result = scenario("patched")
    assert not result.deadlocks
    nested = [a for a in result.anomalies if a.kind == "reentrant"]
    assert nested and {a.lock_class for a in nested} == {RESCAN}
    assert all(a.depth == 2 for a in nested)
    assert "pciehp_ist" in functions(nested[0].stack)
    # the hotplug path against unbind_store is still an inversion
    [inv] = [i for i in result.inversions if set(i.cycle) == {"device_lock", RESCAN}]
    seen = set()
    for ws in inv.paths:
        for w in ws:
            seen |= functions(w.stack) | functions(w.held_stack)
    assert {"unbind_store", "pciehp_ist", "sriov_numvfs_store"} <= seen
    deep = scenario("patched", max_depth=1)
    assert {a.kind for a in deep.anomalies} >= {"depth_exceeded"}
