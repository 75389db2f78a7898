"""lktrace diff on small hand-built traces whose events carry call paths."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import build_columns
from typer.testing import CliRunner

from lktrace.cli import app, expand_traces
from lktrace.replay.analyze import Options
from lktrace.replay.diff import diff
from lktrace.replay.paths import call_path
from lktrace.replay.render_diff import path_labels
from lktrace.trace import StackTable, Trace, TraceMeta, frame_symbol, read_trace, write_trace

R = "pci_rescan_remove_lock"
PF = "pci:0000:01:00.0"
REMOVE = ("remove_store", "dev_attr_store", "vfs_write")
UNBIND = ("unbind_store", "drv_attr_store", "vfs_write")
HOTPLUG = ("pciehp_unconfigure_device", "pciehp_ist", "irq_thread")
STOP = ("device_release_driver", "pci_stop_bus_device")  # where removal takes device_lock
SRIOV = ("sriov_del_vfs", "ice_remove", "device_release_driver")  # where .remove() takes R


def take(tid: int, lock: str, *path: str) -> list[tuple]:
    """Rows of one acquisition of ``lock`` called from ``path`` (innermost first)."""
    return [(tid, "attempt", lock, path), (tid, "acquired", lock, path)]


def drop(tid: int, lock: str, *path: str) -> list[tuple]:
    return [(tid, "released", lock, path or ("unlock_site",))]


def nest(tid: int, outer: str, outer_path: tuple, inner: str, inner_path: tuple) -> list[tuple]:
    """Take ``outer`` then ``inner`` under it, and let both go."""
    return (
        take(tid, outer, *outer_path)
        + take(tid, inner, *inner_path)
        + drop(tid, inner, *inner_path)
        + drop(tid, outer, *outer_path)
    )


def stock_remove(tid: int = 1) -> list[tuple]:
    """remove_store before the fix: the rescan lock, then the PF's device_lock."""
    return nest(tid, R, REMOVE, PF, STOP + REMOVE)


def fixed_remove(tid: int = 1) -> list[tuple]:
    """remove_store after the fix: device_lock first and let go, then the rescan lock."""
    return take(tid, PF, *REMOVE) + drop(tid, PF, *REMOVE) + take(tid, R, *REMOVE) + drop(tid, R)


def unbind(tid: int = 2) -> list[tuple]:
    return nest(tid, PF, UNBIND, R, SRIOV + UNBIND)


def hotplug(tid: int = 3) -> list[tuple]:
    return nest(tid, R, HOTPLUG, PF, STOP + HOTPLUG)


def write(
    path: Path,
    steps: list[tuple],
    *,
    kernel: str = "6.12.0-old",
    offset: int = 0x10,
    step_ns: int = 1000,
) -> Path:
    """A trace of ``steps`` (tid, event, lock, call path), with stacks; offsets vary by build."""
    cols = build_columns([s[:3] for s in steps], step_ns)
    stacks = StackTable()
    cols["caller"] = [f"{s[3][0]}+{offset:#x}" for s in steps]
    cols["stack_id"] = [
        stacks.intern(
            ["mutex_lock+0x10"] + [f"{f}+{offset + 8 * i:#x}" for i, f in enumerate(s[3])]
        )
        for s in steps
    ]
    return write_trace(path, cols, TraceMeta(kernel=kernel, stacks=stacks.stacks))


def compare(tmp_path: Path, old: list[tuple], new: list[tuple], **opts):
    a = write(tmp_path / "old.parquet", old)
    b = write(tmp_path / "new.parquet", new, kernel="6.12.0-new", offset=0x24)
    return diff([read_trace(a)], [read_trace(b)], Options(**opts))


def reboot(trace: Trace, path: Path, kernel: str = "6.13.0-rebooted") -> Path:
    """A copy of ``trace`` as another boot and build records it: addresses and offsets moved."""
    t = trace.table
    shift = 0x2340000
    addr = pc.add_checked(t["lock_addr"], pa.scalar(shift, pa.uint64()))
    names = [
        f"{a:#x}" if n.startswith("0x") else n
        for n, a in zip(t["lock_name"].to_pylist(), addr.to_pylist(), strict=True)
    ]

    def moved(frame: str) -> str:
        func, plus, off = frame.partition("+")
        return f"{func}+{int(off, 16) + 4:#x}" if plus else frame

    t = t.set_column(t.schema.get_field_index("lock_addr"), "lock_addr", addr)
    t = t.set_column(t.schema.get_field_index("lock_name"), "lock_name", pa.array(names))
    callers = pa.array([moved(c) for c in t["caller"].to_pylist()])
    t = t.set_column(t.schema.get_field_index("caller"), "caller", callers)
    stacks = [[moved(f) for f in s] for s in trace.meta.stacks]
    meta = replace(trace.meta, kernel=kernel, kernel_version="#2 SMP rebuilt", stacks=stacks)
    return write_trace(path, t, meta)


# -- matching -----------------------------------------------------------------


def test_symbols_and_call_paths():
    assert frame_symbol("remove_store+0x1c/0x90") == "remove_store"
    assert frame_symbol("ice_remove+0x188 [ice]") == "ice_remove [ice]"
    stack = ["mutex_lock+0x10", "sriov_numvfs_store+0x26", "dev_attr_store+0x31e"]
    assert call_path("sriov_numvfs_store+0x26", stack) == ("sriov_numvfs_store", "dev_attr_store")
    whole = ("mutex_lock", "sriov_numvfs_store", "dev_attr_store")
    assert call_path("somewhere_else+0x8", stack) == whole
    assert call_path("remove_store+0x1c", []) == ("remove_store",)


def test_path_labels_show_where_paths_part():
    via_unbind = ("sriov_del_vfs", "sriov_disable", "pci_disable_sriov", "ice_free_vfs", *UNBIND)
    via_remove = (*via_unbind[:4], *REMOVE)
    assert path_labels([via_unbind, via_remove]) == [
        "sriov_del_vfs < sriov_disable < pci_disable_sriov < … < unbind_store < drv_attr_store < …",
        "sriov_del_vfs < sriov_disable < pci_disable_sriov < … < remove_store < dev_attr_store < …",
    ]
    assert path_labels([REMOVE]) == ["remove_store < dev_attr_store < vfs_write"]


def test_same_trace_is_same(tmp_path):
    path = write(tmp_path / "t.parquet", stock_remove() + unbind() + hotplug())
    d = diff([read_trace(path)], [read_trace(path)])
    assert d.verdict == "same"
    assert not (d.edges_added or d.edges_removed or d.paths_added or d.paths_removed)
    assert not (d.not_exercised or d.new_coverage or d.depth_changes)
    assert not (d.inversions_fixed or d.inversions_introduced or d.inversions_not_exercised)
    [inv] = d.inversions_remaining
    assert all(p.status == "kept" for e in inv.edges for p in e.paths)


def test_rebooted_copy_matches(tmp_path):
    anon = "0xffff888000004000"  # an anonymous mutex, known by its address only
    rows = stock_remove() + unbind() + nest(4, anon, ("probe",), R, ("probe",))
    rows += nest(5, R, ("rescan",), anon, ("rescan",))
    old = write(tmp_path / "old.parquet", rows)
    new = reboot(read_trace(old), tmp_path / "new.parquet")
    assert (
        read_trace(new).table["lock_name"].to_pylist()
        != read_trace(old).table["lock_name"].to_pylist()
    )
    d = diff([read_trace(old)], [read_trace(new)])
    assert d.verdict == "same"
    assert not (d.edges_added or d.edges_removed or d.new_coverage or d.not_exercised)
    assert {tuple(sorted(c.cycle)) for c in d.inversions_remaining} == {
        ("device_lock", R),
        ("mutex@caller", R),
    }


# -- orderings ---------------------------------------------------------------


def test_fixed_when_the_path_ran_and_no_longer_orders(tmp_path):
    d = compare(tmp_path, stock_remove() + unbind(), fixed_remove() + unbind())
    assert d.verdict == "better"
    [fixed] = d.inversions_fixed
    assert fixed.level == "class" and sorted(fixed.cycle) == ["device_lock", R]
    status = {(e.src, e.dst): e.status for e in fixed.edges}
    assert status == {(R, "device_lock"): "removed", ("device_lock", R): "kept"}
    [removed] = d.edges_removed
    assert (removed.src, removed.dst, removed.path) == (R, "device_lock", REMOVE)
    assert removed.witness.comm == "task1" and removed.witness.held_caller.startswith("remove_")
    assert not d.not_exercised and not d.inversions_remaining
    a, b = tmp_path / "old.parquet", tmp_path / "new.parquet"
    text = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert text.exit_code == 0 and text.stdout.startswith("verdict: better")
    assert "INVERSION FIXED 1" in text.stdout and "EDGE REMOVED" in text.stdout


def test_one_path_fixed_another_remaining(tmp_path):
    d = compare(
        tmp_path,
        stock_remove() + unbind() + hotplug(),
        fixed_remove() + unbind() + hotplug(),
    )
    assert d.verdict == "same"  # the class cycle stays: hotplug vs unbind_store
    [inv] = d.inversions_remaining
    [down] = [e for e in inv.edges if e.src == R]
    assert {p.path: p.status for p in down.paths} == {REMOVE: "removed", HOTPLUG: "kept"}
    [gone] = d.paths_removed
    assert (gone.src, gone.path, gone.edge_in_both) == (R, REMOVE, True)
    assert not d.edges_removed


def test_not_exercised_is_not_fixed(tmp_path):
    d = compare(tmp_path, stock_remove() + unbind(), unbind())
    assert d.verdict == "same"
    assert not d.inversions_fixed and not d.edges_removed
    [inv] = d.inversions_not_exercised
    assert {e.status for e in inv.edges} == {"not_exercised", "kept"}
    [gone] = d.not_exercised
    assert (gone.src, gone.dst, gone.path, gone.exercised) == (R, "device_lock", REMOVE, False)


def test_introduced_is_worse(tmp_path):
    d = compare(tmp_path, unbind() + take(3, R, *HOTPLUG) + drop(3, R), unbind() + hotplug())
    assert d.verdict == "worse"
    [new] = d.inversions_introduced
    assert new.exercised  # the old trace ran the hotplug path, which took nothing under R
    [added] = d.edges_added
    assert (added.src, added.dst, added.path) == (R, "device_lock", HOTPLUG)


def test_introduced_on_a_path_the_old_trace_never_ran(tmp_path):
    d = compare(tmp_path, unbind(), unbind() + hotplug())
    assert d.verdict == "worse"
    [new] = d.inversions_introduced
    assert not new.exercised
    assert not d.edges_added and [(o.src, o.path) for o in d.new_coverage] == [(R, HOTPLUG)]


def test_gate_lock_fixes_an_inversion(tmp_path):
    gated = (
        take(1, "G", *REMOVE)
        + stock_remove()
        + drop(1, "G")
        + take(2, "G", *UNBIND)
        + unbind()
        + drop(2, "G")
    )
    d = compare(tmp_path, stock_remove() + unbind(), gated)
    [fixed] = d.inversions_fixed
    assert fixed.gate == "G" and {e.status for e in fixed.edges} == {"kept"}
    assert d.verdict == "better"


# -- nesting and timing --------------------------------------------------------

NESTED = SRIOV + STOP + HOTPLUG  # hotplug reaching .remove(), which asks for R again


def self_deadlocking() -> list[tuple]:
    return take(3, R, *HOTPLUG) + take(3, PF, *STOP, *HOTPLUG) + [(3, "attempt", R, NESTED)]


def reentrant(depth: int = 2) -> list[tuple]:
    again = depth - 1
    return (
        take(3, R, *HOTPLUG)
        + take(3, PF, *STOP, *HOTPLUG)
        + take(3, R, *NESTED) * again
        + drop(3, R, *NESTED) * again
        + drop(3, PF)
        + drop(3, R)
    )


def test_self_deadlock_becomes_reentrant(tmp_path):
    d = compare(tmp_path, self_deadlocking(), reentrant())
    [c] = d.depth_changes
    assert (c.lock_class, c.lock_name, c.path) == (R, R, NESTED)
    assert (c.old.kind, c.old.depth, c.new.kind, c.new.depth) == (
        "self_deadlock",
        2,
        "reentrant",
        2,
    )
    assert c.change == "better" and d.verdict == "better"
    assert c.new.stack[1].startswith("sriov_del_vfs+")


def test_reentrant_becomes_self_deadlock_or_too_deep(tmp_path):
    worse = compare(tmp_path, reentrant(), self_deadlocking())
    assert [c.change for c in worse.depth_changes] == ["worse"] and worse.verdict == "worse"
    deeper = compare(tmp_path, reentrant(), reentrant(depth=3))
    [c] = deeper.depth_changes
    assert (c.old.kind, c.new.kind, c.new.depth) == ("reentrant", "depth_exceeded", 3)
    assert c.change == "worse" and deeper.verdict == "worse"
    assert not compare(tmp_path, reentrant(3), reentrant(3), max_depth=3).depth_changes


def test_nesting_gone_on_a_path_that_ran(tmp_path):
    plain = take(3, R, *NESTED) + drop(3, R)  # the path runs, without holding R already
    d = compare(tmp_path, self_deadlocking(), plain)
    [c] = d.depth_changes
    assert (c.new.kind, c.change) == ("none", "better")
    unseen = compare(tmp_path, self_deadlocking(), unbind())
    assert [c.new.kind for c in unseen.depth_changes] == ["unseen"]
    assert unseen.depth_changes[0].change == "not_exercised" and unseen.verdict == "same"


def test_hold_and_wait_times(tmp_path):
    rows = stock_remove() + unbind()
    a = write(tmp_path / "a.parquet", rows, step_ns=1000)
    b = write(tmp_path / "b.parquet", rows, step_ns=3000)
    d = diff([read_trace(a)], [read_trace(b)])
    timing = {t.lock_class: t for t in d.timing}
    assert set(timing) == {R, "device_lock"}
    rescan = timing[R]
    assert rescan.old["count"] == rescan.new["count"] == 2
    assert rescan.new["hold_p50"] == 3 * rescan.old["hold_p50"] > 0
    assert rescan.new["wait_p99"] == 3 * rescan.old["wait_p99"] == 3000


def test_trace_without_releases_compares_waits_only(tmp_path):
    a = write(tmp_path / "a.parquet", stock_remove() + unbind())
    rows = [r for r in stock_remove() + unbind() if r[1] != "released"]
    cols = build_columns([r[:3] for r in rows])
    b = write_trace(tmp_path / "b.parquet", cols, TraceMeta(extra={"releases": "no"}))
    d = diff([read_trace(a)], [read_trace(b)])
    assert d.verdict == "same" and "b.parquet" in d.notes[-1]
    assert not (d.edges_removed or d.inversions_fixed or d.not_exercised or d.depth_changes)
    rescan = next(t for t in d.timing if t.lock_class == R)
    assert rescan.new["wait_p50"] == 1000 and rescan.new["hold_p50"] is None


# -- command line -------------------------------------------------------------


def test_cli_json_and_exit_codes(tmp_path):
    runner = CliRunner()
    a = write(tmp_path / "a.parquet", unbind())
    b = write(tmp_path / "b.parquet", unbind() + hotplug())
    worse = runner.invoke(app, ["diff", "--format", "json", str(a), str(b)])
    assert worse.exit_code == 1
    doc = json.loads(worse.stdout)
    assert set(doc) >= {
        "verdict",
        "edges_added",
        "edges_removed",
        "inversions_fixed",
        "inversions_introduced",
        "inversions_remaining",
        "depth_changes",
        "not_exercised",
        "timing",
    }
    assert doc["verdict"] == "worse"
    edge = doc["inversions_introduced"][0]["edges"][0]
    assert set(edge) == {"from", "to", "status", "paths", "witness"}
    assert set(edge["witness"]) >= {"from", "to", "stack", "held_stack", "tid", "comm"}
    better = runner.invoke(app, ["diff", str(b), str(a)])
    assert better.exit_code == 0
    assert better.stdout.startswith("verdict: same")  # not exercised: no claim it got better
    same = runner.invoke(app, ["diff", str(a), str(a)])
    assert same.exit_code == 0 and same.stdout.startswith("verdict: same")


@pytest.mark.parametrize("bad", ["missing", "format"])
def test_cli_bad_input(tmp_path, bad):
    a = write(tmp_path / "a.parquet", unbind())
    args = [str(a), str(tmp_path / "nope.parquet")] if bad == "missing" else [str(a), str(a)]
    if bad == "format":
        args += ["--format", "xml"]
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "diff", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lktrace:")


# -- simulated stock and patched kernels ----------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    """The SR-IOV scenarios, simulated once; ``stock`` is a folder of two stock runs."""
    from lktrace.sim import simulate

    root = tmp_path_factory.mktemp("sim")
    (root / "stock").mkdir()
    paths = {
        name: simulate(name, root / where / f"{name}.parquet")
        for name, where in (
            ("stock-sequential", "stock"),
            ("stock-selfdeadlock", "stock"),
            ("stock-deadlock", "."),
            ("patched", "."),
        )
    }
    return {**paths, "stock": root / "stock"}


def traces(path: Path) -> list[Trace]:
    return [read_trace(p) for p in expand_traces([path])]


def paths_of(change, src: str, dst: str) -> dict[str, str]:
    """Per call path (its entry point, the first *_store or pciehp_ist frame): status."""
    [edge] = [e for e in change.edges if (e.src, e.dst) == (src, dst)]
    out = {}
    for p in edge.paths:
        entry = next(f for f in p.path if f.endswith("_store") or f == "pciehp_ist")
        out.setdefault(entry, set()).add(p.status)
    return out


def test_sim_stock_vs_patched(sim):
    d = diff(traces(sim["stock"]), traces(sim["patched"]))
    # the hotplug vs unbind_store inversion is still there
    [inv] = d.inversions_remaining
    assert (inv.level, sorted(inv.cycle)) == ("class", ["device_lock", R])
    assert "kept" in paths_of(inv, R, "device_lock")["pciehp_ist"]
    assert paths_of(inv, "device_lock", R)["unbind_store"] == {"kept"}
    # sriov_numvfs_store vs hotplug: a new path into it, not run by the stock workload
    assert paths_of(inv, "device_lock", R)["sriov_numvfs_store"] == {"added"}
    # the rescan lock nests to depth 2 where the stock kernel hung on itself
    [nesting] = [c for c in d.depth_changes if c.lock_class == R]
    assert nesting.path[:2] == ("sriov_del_vfs", "sriov_disable") and "pciehp_ist" in nesting.path
    assert (nesting.old.kind, nesting.new.kind, nesting.new.depth) == (
        "self_deadlock",
        "reentrant",
        2,
    )
    assert nesting.change == "better" and d.verdict == "better"
    assert not d.inversions_introduced


def test_sim_remove_unbind_no_longer_deadlocks(sim):
    """The remove_store/unbind_store deadlock of the stock kernel does not happen on v14.

    Lock order alone cannot call it fixed: v14's remove_store still reaches
    device_release_driver() (device_lock) under the rescan lock in
    pci_stop_dev(); it is safe because the driver was already unbound, which a
    lock trace cannot see.  So the class cycle stays, deadlocked only in old,
    with the remove_store and unbind_store paths both kept.
    """
    d = diff(traces(sim["stock-deadlock"]), traces(sim["patched"]))
    [inv] = d.inversions_remaining
    assert inv.deadlocked_old and not inv.deadlocked_new
    assert "kept" in paths_of(inv, R, "device_lock")["remove_store"]
    assert "kept" in paths_of(inv, "device_lock", R)["unbind_store"]
    assert d.verdict == "same"


def test_sim_patched_against_itself_and_a_reboot(sim, tmp_path):
    same = CliRunner().invoke(app, ["diff", str(sim["patched"]), str(sim["patched"])])
    assert same.exit_code == 0 and same.stdout.startswith("verdict: same")
    copy = reboot(read_trace(sim["patched"]), tmp_path / "rebooted.parquet")
    d = diff(traces(sim["patched"]), traces(copy))
    assert d.verdict == "same" and d.old[0]["kernel"] != d.new[0]["kernel"]
    assert not any((d.edges_added, d.edges_removed, d.paths_added, d.paths_removed, d.new_coverage))
    assert not (d.not_exercised or d.depth_changes or d.inversions_introduced)
    assert len(d.inversions_remaining) == len(diff(traces(copy), traces(copy)).inversions_remaining)


def test_sim_regression_fails_the_gate(sim):
    result = CliRunner().invoke(
        app, ["diff", "-f", "json", str(sim["patched"]), str(sim["stock-selfdeadlock"])]
    )
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "worse"
    assert [(c["old"]["kind"], c["new"]["kind"]) for c in doc["depth_changes"]] == [
        ("reentrant", "self_deadlock")
    ]
