"""Real-kernel traces from the lab (tests/data/lab/, see its README), checked in seconds.

Recorded by ``lktrace record`` on Debian's own kernels under QEMU: on 6.1 and
6.12 the lkpf/NVMe root-port remove vs sriov_numvfs deadlock and the same
writes in sequence; on every kernel of the matrix (6.1, 6.12, 6.16, 6.18, 7.2)
the igb PF's sequential walk, its remove with VFs enabled and, where it hangs,
the LKML unbind-vs-remove race; and the diffs between consecutive kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_checks import (
    DEADLOCK,
    HISTORY,
    IGB_RACE,
    IGB_SELF,
    IGB_WALK,
    SEQUENTIAL,
    assert_analyze_deadlock,
    assert_analyze_predicted,
    assert_deadlock_trace,
    assert_diff_inversion_introduced,
    assert_diff_path_moved,
    assert_diff_same_deadlock,
    assert_diff_self_deadlock_fixed,
    assert_diff_self_deadlock_introduced,
    assert_nothing_hung,
    assert_self_deadlock,
    assert_sequential_trace,
    assert_unbind_remove_deadlock,
    assert_walk,
    self_deadlocking,
)

from lab.kernels import Kernel
from lktrace.trace import read_trace

DATA = Path(__file__).parent / "data" / "lab"
KERNEL_DIRS = sorted(p for p in DATA.iterdir() if p.is_dir()) if DATA.is_dir() else []
LKPF_DIRS = [d for d in KERNEL_DIRS if (d / f"{DEADLOCK}.parquet").exists()]
IGB_DIRS = [d for d in KERNEL_DIRS if (d / f"{IGB_WALK}.parquet").exists()]


def _series(d: Path) -> str:
    return ".".join(d.name.split(".")[:2]).split("-")[0]


def _hangs(d: Path) -> bool:
    return self_deadlocking(d.name)


@pytest.fixture(params=LKPF_DIRS, ids=lambda p: p.name)
def lkpf_dir(request: pytest.FixtureRequest) -> Path:
    return request.param


@pytest.fixture(params=IGB_DIRS, ids=lambda p: p.name)
def igb_dir(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_there_are_traces_of_the_whole_history() -> None:
    assert {_series(p) for p in LKPF_DIRS} >= {"6.1", "6.12"}
    assert {_series(p) for p in IGB_DIRS} >= {"6.1", "6.12", "6.16", "6.18", "7.2"}


def test_traces_come_from_the_kernel_they_are_filed_under() -> None:
    for d in KERNEL_DIRS:
        for trace in d.glob("*.parquet"):
            assert read_trace(trace).meta.kernel == d.name


def test_deadlock_leaves_both_writers_waiting(lkpf_dir: Path) -> None:
    assert_deadlock_trace(lkpf_dir / f"{DEADLOCK}.parquet")


def test_sequential_writes_leave_nothing_waiting(lkpf_dir: Path) -> None:
    assert_sequential_trace(lkpf_dir / f"{SEQUENTIAL}.parquet")


def test_analyze_reports_the_real_deadlock(lkpf_dir: Path) -> None:
    assert_analyze_deadlock(lkpf_dir / f"{DEADLOCK}.parquet")


def test_analyze_predicts_the_inversion_from_the_sequential_run(lkpf_dir: Path) -> None:
    assert_analyze_predicted(lkpf_dir / f"{SEQUENTIAL}.parquet")


def test_diff_between_the_kernels_keeps_the_deadlock() -> None:
    old, new = (d / f"{DEADLOCK}.parquet" for d in LKPF_DIRS[:2])
    assert_diff_same_deadlock(old, new)


def test_igb_walk_predicts_what_the_kernel_locks(igb_dir: Path) -> None:
    assert_walk(igb_dir / f"{IGB_WALK}.parquet", Kernel(igb_dir.name).rescan_locking.value)


def test_igb_pf_remove_with_vfs_deadlocks_on_itself_only_on_05703271c3cd(igb_dir: Path) -> None:
    trace = igb_dir / f"{IGB_SELF}.parquet"
    if _hangs(igb_dir):
        assert_self_deadlock(trace)
    else:
        assert_nothing_hung(trace)


def test_igb_unbind_vs_remove_is_the_lkml_deadlock_on_05703271c3cd() -> None:
    races = {d: d / f"{IGB_RACE}.parquet" for d in IGB_DIRS if (d / f"{IGB_RACE}.parquet").exists()}
    assert any(_hangs(d) for d in races), "no race trace from a 05703271c3cd kernel"
    for d, trace in races.items():
        if _hangs(d):
            assert_unbind_remove_deadlock(trace)
        else:
            assert_nothing_hung(trace)


def _pair(old: str, new: str) -> tuple[Path, Path]:
    by_series = {_series(d): d for d in IGB_DIRS}
    return by_series[old], by_series[new]


def test_diff_walks_before_and_into_05703271c3cd_worse() -> None:
    a, b = _pair(*HISTORY[0])
    assert_diff_inversion_introduced(a / f"{IGB_WALK}.parquet", b / f"{IGB_WALK}.parquet")


def test_diff_walks_out_of_05703271c3cd_moved_the_path() -> None:
    a, b = _pair(*HISTORY[1])
    assert_diff_path_moved(a / f"{IGB_WALK}.parquet", b / f"{IGB_WALK}.parquet")


def test_diff_removes_into_05703271c3cd_self_deadlock() -> None:
    a, b = _pair(*HISTORY[0])
    assert_diff_self_deadlock_introduced(a / f"{IGB_SELF}.parquet", b / f"{IGB_SELF}.parquet")


def test_diff_removes_out_of_05703271c3cd_self_deadlock_fixed() -> None:
    a, b = _pair(*HISTORY[1])
    assert_diff_self_deadlock_fixed(a / f"{IGB_SELF}.parquet", b / f"{IGB_SELF}.parquet")
