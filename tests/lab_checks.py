"""What a real-kernel lab trace must show, checked on the raw events and by ``lktrace analyze``.

Shared by test_lab.py (traces recorded now, under QEMU) and test_real_traces.py
(the small traces from such runs committed under tests/data/lab/).  The raw
checks use plain pandas, independently of lktrace.replay, so they also check
the analysis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab.kernels import Kernel, RescanLocking
from lktrace.trace import read_trace

DEADLOCK = "rootport-remove-vs-numvfs"
SEQUENTIAL = "rootport-remove-then-numvfs"
#: The two writers of the deadlock scenario (task comms set by the scenario) and
#: the lock class each is left waiting for: the root port's remove holds the
#: rescan lock and wants the PF's device_lock; sriov_numvfs the other way round.
WRITERS = {"rp-remove": "device_lock", "numvfs=0": "pci_rescan_remove_lock"}
#: The sysfs store each writer's stack goes through.
ENTRY = {"rp-remove": "remove_store", "numvfs=0": "sriov_numvfs_store"}
INVERSION = {"device_lock", "pci_rescan_remove_lock"}


def pending_attempts(path: Path) -> pd.DataFrame:
    """Lock attempts that never returned: one row per (task, lock) still waiting."""
    df = read_trace(path).sorted().to_pandas()
    df = df[df["event"].isin(["attempt", "acquired", "failed"])]
    step = df["event"].map({"attempt": 1, "acquired": -1, "failed": -1}).astype(int)
    keys = ["tid", "comm", "lock_class", "lock_name"]
    open_ = df.assign(open=step).groupby(keys, observed=True)["open"].sum()
    return open_[open_ > 0].reset_index()


def analyze_json(path: Path, *options: str) -> dict:
    """``lktrace analyze --format json`` on ``path`` (exit 1 only means it found problems)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "analyze", "--format", "json", *options, str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def assert_deadlock_trace(path: Path) -> None:
    """Both writers are left waiting, each for the lock the other holds."""
    pending = pending_attempts(path)
    waits = {row.comm: row.lock_class for row in pending.itertuples()}
    assert {c: waits.get(c) for c in WRITERS} == WRITERS, pending.to_string()


def assert_sequential_trace(path: Path) -> None:
    """Both writers ran to the end: nothing is left waiting."""
    comms = set(read_trace(path).table["comm"].to_pylist())
    assert set(WRITERS) <= comms
    pending = pending_attempts(path)
    assert pending.empty, pending.to_string()


def _inversions(report: dict) -> list[dict]:
    return [
        inv
        for inv in report["inversions"]
        if inv["level"] == "class" and set(inv["cycle"]) == INVERSION
    ]


def assert_analyze_deadlock(path: Path) -> None:
    """analyze reports the deadlock that happened, with stacks through the sysfs stores."""
    report = analyze_json(path)
    (deadlock,) = report["deadlocks"]
    tasks = {t["comm"]: t for t in deadlock["tasks"]}
    assert set(tasks) == set(WRITERS)
    for comm, lock_class in WRITERS.items():
        waits = tasks[comm]["waits_for"]
        assert waits["lock_class"] == lock_class
        frames = waits["stack"]
        if not frames and int(report["trace"].get("stack_errors", 0)):
            # BPF refused this stack (its hash bucket was taken: counted in stack_errors);
            # the event still names its call site, from the first frames
            frames = [waits["caller"]]
        assert any(f.startswith(ENTRY[comm] + "+") for f in frames), waits
        held = {h["lock_class"] for h in tasks[comm]["holds"]}
        assert (INVERSION - {lock_class}) <= held
    assert any(inv["deadlocked"] for inv in _inversions(report))


def assert_analyze_predicted(path: Path) -> None:
    """analyze predicts the same inversion from the sequential run, which did not hang.

    On the lock instances too: the root port's remove took the rescan lock, then
    the PF's device_lock, which sriov_numvfs holds while it takes the rescan lock.
    """
    report = analyze_json(path)
    assert report["deadlocks"] == []
    found = _inversions(report)
    assert found and not any(inv["deadlocked"] for inv in found)
    by_instance = [
        inv
        for inv in analyze_json(path, "--level", "instance")["inversions"]
        if "pci_rescan_remove_lock" in inv["cycle"] and len(inv["cycle"]) == 2
    ]
    assert by_instance and not any(inv["deadlocked"] for inv in by_instance)
    witnesses = {(e["comm"], e["from_class"], e["to_class"]) for e in by_instance[0]["edges"]}
    assert ("rp-remove", "pci_rescan_remove_lock", "device_lock") in witnesses, witnesses


def assert_diff_same_deadlock(old: Path, new: Path) -> None:
    """``lktrace diff`` of two kernels' deadlock traces: the same inversion, deadlocked in both.

    Their edges differ only where kernel functions were renamed or split (mutex classes
    are named for the caller), so the verdict is ``same``.
    """
    lktrace = [sys.executable, "-m", "lktrace"]
    if subprocess.run([*lktrace, "diff", "--help"], capture_output=True).returncode != 0:
        pytest.skip("lktrace diff is not in this checkout")
    proc = subprocess.run(
        [*lktrace, "diff", "--format", "json", str(old), str(new)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "same"
    assert report["inversions_fixed"] == report["inversions_introduced"] == []
    remaining = [
        inv
        for inv in report["inversions_remaining"]
        if inv["level"] == "class" and set(inv["cycle"]) == INVERSION
    ]
    assert remaining and remaining[0]["deadlocked_old"] and remaining[0]["deadlocked_new"]


# -- the igb PF on every kernel of the matrix (lab/guest/scenarios/igb-*.sh) --------

#: Consecutive kernels of the SR-IOV rescan-lock history, whose igb traces are diffed.
HISTORY = [("6.16", "6.18"), ("6.18", "7.2")]
IGB_WALK = "igb-walk"
IGB_SELF = "igb-pf-remove-vfs-on"
IGB_RACE = "igb-unbind-vs-remove"
RESCAN = "pci_rescan_remove_lock"
#: Frames of the self-deadlock's waiting stack, innermost first (05703271c3cd kernels).
SELF_DEADLOCK_PATH = [
    "pci_lock_rescan_remove",
    "sriov_disable",
    "pci_disable_sriov",
    "igb_remove",
    "remove_store",
]


def self_deadlocking(abi: str) -> bool:
    """Whether the kernel has 05703271c3cd, so the igb removes with VFs on hang."""
    return Kernel(abi).rescan_locking is RescanLocking.SRIOV_ENABLE_DISABLE


def _symbols(stack: list[str]) -> list[str]:
    return [f.split("+")[0] for f in stack]


def _in_order(stack: list[str], path: list[str]) -> bool:
    """Whether ``path``'s functions appear in ``stack`` in that order (others between)."""
    it = iter(_symbols(stack))
    return all(name in it for name in path)


def witnesses(inv: dict, src: str, dst: str) -> list[dict]:
    """The witnesses of an inversion's ``src -> dst`` edge, one per call path."""
    return [
        w for path in inv["paths"] for w in path if (w["from_class"], w["to_class"]) == (src, dst)
    ]


def rescan_inversion(path: Path) -> dict | None:
    """The class-level device_lock <-> pci_rescan_remove_lock inversion, if analyze finds one."""
    found = _inversions(analyze_json(path))
    assert len(found) <= 1, found
    return found[0] if found else None


def assert_nothing_hung(path: Path) -> None:
    """Every writer ran to the end: no deadlock, nothing waiting, no self_deadlock."""
    pending = pending_attempts(path)
    assert pending.empty, pending.to_string()
    report = analyze_json(path)
    assert report["deadlocks"] == []
    assert not [a for a in report["anomalies"] if a["kind"] == "self_deadlock"]


def assert_walk(path: Path, locking: str) -> None:
    """The sequential walk: nothing hangs; the inversion is predicted where the kernel has it.

    ``locking`` is a lab.kernels.RescanLocking value: ``none`` (6.16: no SR-IOV path
    takes the rescan lock under a device_lock, so no inversion),
    ``sriov_enable/sriov_disable`` (05703271c3cd: unbind's .remove() -> sriov_disable
    and sriov_numvfs_store -> sriov_enable/disable take it under the PF's lock) or
    ``sriov_numvfs_store`` (a5338e365c45: only sriov_numvfs_store takes it, itself).
    """
    assert_nothing_hung(path)
    comms = set(read_trace(path).table["comm"].to_pylist())
    assert {"numvfs=2", "numvfs=0", "pf-unbind", "pf-bind", "rp-remove"} <= comms
    inv = rescan_inversion(path)
    if locking == "none":
        assert inv is None, inv
        return
    assert inv is not None and not inv["deadlocked"]
    removes = {w["comm"] for w in witnesses(inv, RESCAN, "device_lock")}
    assert "rp-remove" in removes, removes
    into = witnesses(inv, "device_lock", RESCAN)
    by = {w["comm"] for w in into}
    if locking == "sriov_enable/sriov_disable":
        assert "pf-unbind" in by, by
        unbind = [w for w in into if w["comm"] == "pf-unbind"]
        assert any(_in_order(w["stack"], ["sriov_disable", "unbind_store"]) for w in unbind)
    else:
        assert "pf-unbind" not in by and by <= {"numvfs=2", "numvfs=0"}, by
        assert all(w["caller"].startswith("sriov_numvfs_store+") for w in into), into


def assert_self_deadlock(path: Path) -> None:
    """The PF's remove with VFs on, on a 05703271c3cd kernel: it waits for itself."""
    report = analyze_json(path)
    (deadlock,) = report["deadlocks"]
    (task,) = deadlock["tasks"]
    assert task["comm"] == "pf-remove" and task["waits_for"]["lock_class"] == RESCAN
    assert RESCAN in {h["lock_class"] for h in task["holds"]}
    assert _in_order(task["waits_for"]["stack"], SELF_DEADLOCK_PATH), task["waits_for"]["stack"]
    (anomaly,) = [a for a in report["anomalies"] if a["kind"] == "self_deadlock"]
    assert anomaly["comm"] == "pf-remove" and anomaly["lock_class"] == RESCAN


def assert_unbind_remove_deadlock(path: Path) -> None:
    """The LKML diagram, on a 05703271c3cd kernel: unbind and remove wait for each other."""
    report = analyze_json(path)
    (deadlock,) = report["deadlocks"]
    tasks = {t["comm"]: t for t in deadlock["tasks"]}
    assert set(tasks) == {"pf-unbind", "pf-remove"}
    unbind, remove = tasks["pf-unbind"]["waits_for"], tasks["pf-remove"]["waits_for"]
    assert unbind["lock_class"] == RESCAN and remove["lock_class"] == "device_lock"
    assert _in_order(unbind["stack"], ["sriov_disable", "igb_remove", "unbind_store"])
    assert _in_order(remove["stack"], ["device_release_driver_internal", "remove_store"])
    inv = rescan_inversion(path)
    assert inv is not None and inv["deadlocked"]


def diff(old: Path, new: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``lktrace diff`` of two traces (exit 1 only means the verdict is worse)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "diff", *options, str(old), str(new)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc


def diff_json(old: Path, new: Path) -> dict:
    return json.loads(diff(old, new, "--format", "json").stdout)


def _rescan_cycle(changes: list[dict]) -> dict:
    (found,) = [c for c in changes if c["level"] == "class" and set(c["cycle"]) == INVERSION]
    return found


def _edge_paths(cycle: dict, src: str, dst: str) -> dict[str, list[list[str]]]:
    """Status -> the call paths (symbols, call site first) of one edge of a cycle change."""
    (edge,) = [e for e in cycle["edges"] if (e["from"], e["to"]) == (src, dst)]
    out: dict[str, list[list[str]]] = {}
    for p in edge["paths"]:
        out.setdefault(p["status"], []).append(p["path"])
    return out


def _through(paths: dict[str, list[list[str]]], status: str, function: str) -> bool:
    return any(function in path for path in paths.get(status, []))


def assert_diff_inversion_introduced(old: Path, new: Path) -> None:
    """Before 05703271c3cd -> with it: worse, the inversion introduced through unbind."""
    first = diff(old, new).stdout.splitlines()[0]
    assert first.startswith("verdict: worse (inversions: 0 fixed, 1 introduced"), first
    report = diff_json(old, new)
    assert report["verdict"] == "worse"
    into = _edge_paths(_rescan_cycle(report["inversions_introduced"]), "device_lock", RESCAN)
    assert _through(into, "added", "unbind_store"), into


def assert_diff_path_moved(old: Path, new: Path) -> None:
    """05703271c3cd -> its replacement: the inversion stays, its paths moved.

    unbind_store's path into it (igb's .remove() -> sriov_disable under the PF's
    device_lock) is removed; sriov_numvfs_store, which held the PF's device_lock
    around sriov_enable/disable taking the rescan lock, now takes the rescan lock
    itself and then VFs' device_locks under it: a path added on the other edge.
    """
    first = diff(old, new).stdout.splitlines()[0]
    assert first.startswith("verdict: same (inversions: 0 fixed, 0 introduced, 1 remaining"), first
    cycle = _rescan_cycle(diff_json(old, new)["inversions_remaining"])
    into = _edge_paths(cycle, "device_lock", RESCAN)
    assert _through(into, "removed", "unbind_store"), into
    assert _through(into, "kept", "sriov_numvfs_store"), into
    out = _edge_paths(cycle, RESCAN, "device_lock")
    assert any(p[0] == "sriov_numvfs_store" for p in out.get("added", [])), out


def _self_deadlock_change(report: dict, side: str) -> dict:
    (change,) = [
        c
        for c in report["depth_changes"]
        if c["lock_class"] == RESCAN and c[side]["kind"] == "self_deadlock"
    ]
    return change


def assert_diff_self_deadlock_introduced(old: Path, new: Path) -> None:
    """The PF's remove with VFs on, into 05703271c3cd: worse, a self_deadlock on sriov_disable."""
    first = diff(old, new).stdout.splitlines()[0]
    assert first.startswith("verdict: worse") and "nesting: 0 better, 1 worse" in first, first
    change = _self_deadlock_change(diff_json(old, new), "new")
    assert change["change"] == "worse" and change["path"][0] == "sriov_disable", change


def assert_diff_self_deadlock_fixed(old: Path, new: Path) -> None:
    """The PF's remove with VFs on, out of 05703271c3cd: better, the self-deadlock is gone."""
    report = diff_json(old, new)
    change = _self_deadlock_change(report, "old")
    assert change["change"] == "better", change
    assert report["verdict"] == "better"
