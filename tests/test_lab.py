"""The real-kernel lab: ``lktrace record`` on Debian's own kernels under QEMU.

Builds the lab for each kernel of the matrix (cached in lab/cache/), runs
every scenario the kernel can run (``python -m lab run KERNEL all``) and
checks the traces that come out, then diffs the igb walks and removes of
consecutive kernels.  Marker ``lab``; skips, with the reason, without root,
QEMU (or apt to get it), disk, or a lab that builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lab_checks import (
    DEADLOCK,
    HISTORY,
    IGB_RACE,
    IGB_SELF,
    IGB_WALK,
    SEQUENTIAL,
    WRITERS,
    assert_analyze_deadlock,
    assert_analyze_predicted,
    assert_deadlock_trace,
    assert_diff_inversion_introduced,
    assert_diff_path_moved,
    assert_diff_self_deadlock_fixed,
    assert_diff_self_deadlock_introduced,
    assert_nothing_hung,
    assert_self_deadlock,
    assert_sequential_trace,
    assert_unbind_remove_deadlock,
    assert_walk,
    pending_attempts,
    self_deadlocking,
)

from lab.kernels import MATRIX, Kernel, resolve
from lktrace.trace import read_trace

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
#: LKTRACE_LAB_KERNELS=6.16,6.18 runs part of the matrix (the others' tests skip).
SELECTED = os.environ.get("LKTRACE_LAB_KERNELS", ",".join(MATRIX)).split(",")
#: A built kernel takes about 3.5 GB (root fs and its image); the matrix, plus room.
MIN_FREE_GB = 25


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (debootstrap, chroot, QEMU's 9p share)"
    if not shutil.which("debootstrap") and not shutil.which("apt-get"):
        return "debootstrap is not installed and there is no apt-get to install it"
    free = shutil.disk_usage(REPO / "lab").free / 2**30
    if free < MIN_FREE_GB:
        return f"the lab needs {MIN_FREE_GB} GB of free disk, {free:.1f} GB here"
    return None


def _lab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def lab_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Kernel, Path]]:
    """Runs every scenario on a kernel once per session: its Kernel and results folder."""
    done: dict[str, tuple[Kernel, Path] | str | AssertionError] = {}

    def runs(name: str) -> tuple[Kernel, Path]:
        if name not in SELECTED:
            pytest.skip(f"kernel {name} is not in LKTRACE_LAB_KERNELS")
        if name not in done:
            try:
                done[name] = _run_all(name, tmp_path_factory)
            except AssertionError as failed:  # one lab run per kernel, even a failed one
                done[name] = failed
        found = done[name]
        if isinstance(found, AssertionError):
            raise found
        if isinstance(found, str):
            pytest.skip(found)
        return found

    return runs


def _run_all(name: str, tmp: pytest.TempPathFactory) -> tuple[Kernel, Path] | str:
    why = _cannot_run()
    if why:
        return why
    built = _lab("build", name)
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the lab cannot build kernel {name}: {last}"
    out = tmp.mktemp(f"lab-{name}")
    ran = _lab("run", name, "all", "--out", out)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return resolve(name), out


@pytest.fixture(scope="module", params=MATRIX)
def runs(request: pytest.FixtureRequest, lab_runs: Callable) -> tuple[Kernel, Path]:
    return lab_runs(request.param)


@pytest.fixture
def lkpf_runs(runs: tuple[Kernel, Path]) -> Path:
    kernel, out = runs
    if not kernel.bookworm:
        pytest.skip(f"lkpf needs {kernel.abi}'s own headers, which the archive does not have")
    return out


def _result(out: Path, scenario: str) -> dict:
    return json.loads((out / f"{scenario}.json").read_text())


def _hangs(kernel: Kernel) -> bool:
    return self_deadlocking(kernel.abi)


def test_deadlock_writers_hang_and_trace_gets_out(lkpf_runs: Path) -> None:
    result = _result(lkpf_runs, DEADLOCK)
    assert result["timed_out"] and result["stopped_by"] in ("SIGINT", "SIGTERM")
    assert set(WRITERS) <= {t["comm"] for t in result["blocked"]}
    trace = read_trace(lkpf_runs / f"{DEADLOCK}.parquet")
    assert trace.meta.kernel == result["kernel"]
    assert_deadlock_trace(trace.path)


def test_sequential_writes_finish_with_nothing_pending(lkpf_runs: Path) -> None:
    result = _result(lkpf_runs, SEQUENTIAL)
    assert result["rc"] == 0 and not result["timed_out"]
    assert_sequential_trace(lkpf_runs / f"{SEQUENTIAL}.parquet")


@pytest.mark.parametrize("scenario", ["pf-remove-vs-unbind", "numvfs-cycle"])
def test_scenario_finishes_with_nothing_pending(lkpf_runs: Path, scenario: str) -> None:
    result = _result(lkpf_runs, scenario)
    assert result["rc"] == 0 and not result["timed_out"]
    trace = lkpf_runs / f"{scenario}.parquet"
    assert read_trace(trace).num_events > 0
    assert pending_attempts(trace).empty


def test_analyze_reports_the_deadlock(lkpf_runs: Path) -> None:
    assert_analyze_deadlock(lkpf_runs / f"{DEADLOCK}.parquet")


def test_analyze_predicts_the_inversion(lkpf_runs: Path) -> None:
    assert_analyze_predicted(lkpf_runs / f"{SEQUENTIAL}.parquet")


def test_igb_walk_predicts_what_the_kernel_locks(runs: tuple[Kernel, Path]) -> None:
    kernel, out = runs
    result = _result(out, IGB_WALK)
    assert result["rc"] == 0 and not result["timed_out"]
    assert read_trace(out / f"{IGB_WALK}.parquet").meta.kernel == kernel.abi
    assert_walk(out / f"{IGB_WALK}.parquet", kernel.rescan_locking.value)


@pytest.mark.parametrize(
    ("scenario", "writers", "check"),
    [
        (IGB_SELF, {"pf-remove"}, assert_self_deadlock),
        (IGB_RACE, {"pf-remove", "pf-unbind"}, assert_unbind_remove_deadlock),
    ],
)
def test_igb_removes_hang_only_on_05703271c3cd_kernels(
    runs: tuple[Kernel, Path], scenario: str, writers: set[str], check: Callable
) -> None:
    kernel, out = runs
    result = _result(out, scenario)
    trace = out / f"{scenario}.parquet"
    if _hangs(kernel):
        assert result["timed_out"] and result["stopped_by"] in ("SIGINT", "SIGTERM")
        assert writers <= {t["comm"] for t in result["blocked"]}
        check(trace)
    else:
        assert result["rc"] == 0 and not result["timed_out"] and not result["blocked"]
        assert_nothing_hung(trace)


def _igb_pair(lab_runs: Callable, step: int, scenario: str) -> tuple[Path, Path]:
    (_, old), (_, new) = (lab_runs(k) for k in HISTORY[step])
    return old / f"{scenario}.parquet", new / f"{scenario}.parquet"


def test_diff_walks_before_and_into_05703271c3cd_worse(lab_runs: Callable) -> None:
    assert_diff_inversion_introduced(*_igb_pair(lab_runs, 0, IGB_WALK))


def test_diff_walks_out_of_05703271c3cd_moved_the_path(lab_runs: Callable) -> None:
    assert_diff_path_moved(*_igb_pair(lab_runs, 1, IGB_WALK))


def test_diff_removes_into_05703271c3cd_self_deadlock(lab_runs: Callable) -> None:
    assert_diff_self_deadlock_introduced(*_igb_pair(lab_runs, 0, IGB_SELF))


def test_diff_removes_out_of_05703271c3cd_self_deadlock_fixed(lab_runs: Callable) -> None:
    assert_diff_self_deadlock_fixed(*_igb_pair(lab_runs, 1, IGB_SELF))
