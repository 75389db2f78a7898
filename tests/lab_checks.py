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
        assert any(f.startswith(ENTRY[comm] + "+") for f in waits["stack"]), waits["stack"]
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
