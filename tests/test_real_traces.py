"""Real-kernel traces from the lab (tests/data/lab/, see its README), checked in a second.

Recorded by ``lktrace record`` on Debian 6.1 and 6.12 under QEMU: the
root-port remove vs sriov_numvfs deadlock and the same writes in sequence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_checks import (
    DEADLOCK,
    SEQUENTIAL,
    assert_analyze_deadlock,
    assert_analyze_predicted,
    assert_deadlock_trace,
    assert_diff_same_deadlock,
    assert_sequential_trace,
)

from lktrace.trace import read_trace

DATA = Path(__file__).parent / "data" / "lab"
KERNEL_DIRS = sorted(p for p in DATA.iterdir() if p.is_dir()) if DATA.is_dir() else []


@pytest.fixture(params=KERNEL_DIRS, ids=lambda p: p.name)
def kernel_dir(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_there_are_traces_of_both_kernels() -> None:
    assert {".".join(p.name.split(".")[:2]) for p in KERNEL_DIRS} >= {"6.1", "6.12"}


def test_traces_come_from_the_kernel_they_are_filed_under(kernel_dir: Path) -> None:
    for trace in kernel_dir.glob("*.parquet"):
        assert read_trace(trace).meta.kernel == kernel_dir.name


def test_deadlock_leaves_both_writers_waiting(kernel_dir: Path) -> None:
    assert_deadlock_trace(kernel_dir / f"{DEADLOCK}.parquet")


def test_sequential_writes_leave_nothing_waiting(kernel_dir: Path) -> None:
    assert_sequential_trace(kernel_dir / f"{SEQUENTIAL}.parquet")


def test_analyze_reports_the_real_deadlock(kernel_dir: Path) -> None:
    assert_analyze_deadlock(kernel_dir / f"{DEADLOCK}.parquet")


def test_analyze_predicts_the_inversion_from_the_sequential_run(kernel_dir: Path) -> None:
    assert_analyze_predicted(kernel_dir / f"{SEQUENTIAL}.parquet")


def test_diff_between_the_kernels_keeps_the_deadlock() -> None:
    old, new = (d / f"{DEADLOCK}.parquet" for d in KERNEL_DIRS[:2])
    assert_diff_same_deadlock(old, new)
