"""The real-kernel lab: ``lktrace record`` on Debian 6.1 and 6.12 under QEMU.

Builds the lab for each kernel (cached in lab/cache/), runs every scenario in
a fresh guest and checks the traces that come out.  Marker ``lab``; skips,
with the reason, without root, QEMU (or apt to get it), disk, or a lab that
builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab_checks import (
    DEADLOCK,
    SEQUENTIAL,
    WRITERS,
    assert_analyze_deadlock,
    assert_analyze_predicted,
    assert_deadlock_trace,
    assert_sequential_trace,
    pending_attempts,
)

from lktrace.trace import read_trace

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
KERNELS = ["6.1", "6.12"]
#: A built kernel takes about 3.5 GB (root fs and its image); two, plus room.
MIN_FREE_GB = 10


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (debootstrap, chroot, QEMU's 9p share)"
    if not shutil.which("qemu-system-x86_64") and not shutil.which("apt-get"):
        return "QEMU is not installed and there is no apt-get to install it"
    free = shutil.disk_usage(REPO / "lab").free / 2**30
    if free < MIN_FREE_GB:
        return f"the lab needs {MIN_FREE_GB} GB of free disk, {free:.1f} GB here"
    return None


def _lab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture(scope="module", params=KERNELS)
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario run on one kernel: the folder with traces and results."""
    why = _cannot_run()
    if why:
        pytest.skip(why)
    built = _lab("build", request.param)
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the lab cannot build kernel {request.param}: {last}")
    out = tmp_path_factory.mktemp(f"lab-{request.param}")
    ran = _lab("run", request.param, "all", "--out", out)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return out


def _result(runs: Path, scenario: str) -> dict:
    return json.loads((runs / f"{scenario}.json").read_text())


def test_deadlock_writers_hang_and_trace_gets_out(runs: Path) -> None:
    result = _result(runs, DEADLOCK)
    assert result["timed_out"] and result["stopped_by"] in ("SIGINT", "SIGTERM")
    assert set(WRITERS) <= {t["comm"] for t in result["blocked"]}
    trace = read_trace(runs / f"{DEADLOCK}.parquet")
    assert trace.meta.kernel == result["kernel"]
    assert_deadlock_trace(trace.path)


def test_sequential_writes_finish_with_nothing_pending(runs: Path) -> None:
    result = _result(runs, SEQUENTIAL)
    assert result["rc"] == 0 and not result["timed_out"]
    assert_sequential_trace(runs / f"{SEQUENTIAL}.parquet")


@pytest.mark.parametrize("scenario", ["pf-remove-vs-unbind", "numvfs-cycle"])
def test_scenario_finishes_with_nothing_pending(runs: Path, scenario: str) -> None:
    result = _result(runs, scenario)
    assert result["rc"] == 0 and not result["timed_out"]
    trace = runs / f"{scenario}.parquet"
    assert read_trace(trace).num_events > 0
    assert pending_attempts(trace).empty


def test_analyze_reports_the_deadlock(runs: Path) -> None:
    assert_analyze_deadlock(runs / f"{DEADLOCK}.parquet")


def test_analyze_predicts_the_inversion(runs: Path) -> None:
    assert_analyze_predicted(runs / f"{SEQUENTIAL}.parquet")
