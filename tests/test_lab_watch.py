"""``lktrace watch`` on real kernels: the lab's deadlock caught with nobody stopping it.

One guest boot per kernel (``python -m lab watch``): ``lktrace watch --stuck 10s`` is
started and, once it says it is armed, a scenario that does not hang (numvfs-cycle),
then the root port's remove racing sriov_numvfs, which deadlocks on Debian's 6.1 and
6.12. Marker ``lab``; skips, with the reason, as test_lab.py does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from lab_checks import DEADLOCK, WRITERS, assert_analyze_deadlock
from test_lab import _cannot_run, _lab

from lktrace.trace import read_trace

pytestmark = pytest.mark.lab

#: The kernels whose stock SR-IOV locking deadlocks in the scenario.
KERNELS = ["6.1", "6.12"]
STUCK_S = 10
QUIET = "numvfs-cycle"


@pytest.fixture(scope="module", params=KERNELS)
def watched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guest's output folder: result.json, watch.log, watch.dmesg, watch/ (dumps)."""
    why = _cannot_run()
    if why:
        pytest.skip(why)
    built = _lab("build", request.param)
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the lab cannot build kernel {request.param}: {last}")
    out = tmp_path_factory.mktemp(f"lab-watch-{request.param}")
    ran = _lab("watch", request.param, "--out", out, "--stuck", str(STUCK_S))
    assert ran.returncode == 0, ran.stderr[-3000:]
    return out


def _result(watched: Path) -> dict:
    result = json.loads((watched / "result.json").read_text())
    assert "error" not in result, (watched / "watch.log").read_text()[-3000:]
    return result


def _scenario(watched: Path, name: str) -> dict:
    (entry,) = [s for s in _result(watched)["scenarios"] if s["name"] == name]
    return entry


def _dump(watched: Path) -> Path:
    (dump,) = (watched / "watch").glob("deadlock-*.parquet")
    return dump


def test_quiet_scenario_leaves_no_dump(watched: Path) -> None:
    quiet = _scenario(watched, QUIET)
    assert quiet["rc"] == 0 and quiet["dumps"] == []


def test_deadlock_dump_written_once_within_stuck_plus_5s(watched: Path) -> None:
    entry = _scenario(watched, DEADLOCK)
    assert entry["dump_seen_ns"] is not None, "no dump appeared"
    assert sorted(n.split("-")[0] for n in entry["dumps"]) == ["deadlock", "deadlock"]
    events = read_trace(_dump(watched)).table.to_pandas()
    attempts = events[events["comm"].isin(list(WRITERS)) & (events["event"] == "attempt")]
    # the hang: the later of the two writers' last attempts, each never answered
    hang_ns = attempts.groupby("comm", observed=True)["ts_ns"].max().max()
    late = (entry["dump_seen_ns"] - hang_ns) / 1e9
    assert STUCK_S <= late <= STUCK_S + 5, late


def test_dump_says_why_and_analyze_reports_the_deadlock(watched: Path) -> None:
    dump = _dump(watched)
    meta = read_trace(dump).meta
    assert meta.extra["watch_reason"] == "deadlock"
    stuck = {s["comm"]: s for s in json.loads(meta.extra["watch_stuck"])}
    assert {c: s["lock_class"] for c, s in stuck.items()} == WRITERS
    assert all(s["waiting_s"] >= STUCK_S and s["held_by"] for s in stuck.values())
    text = dump.with_suffix(".txt").read_text()
    assert text.startswith("deadlock: ") and "DEADLOCK 1 (happened)" in text
    assert_analyze_deadlock(dump)  # both tasks, with stacks through the sysfs stores


def test_kernel_log_has_the_line(watched: Path) -> None:
    dmesg = (watched / "watch.dmesg").read_text(errors="replace")
    (line,) = [ln for ln in dmesg.splitlines() if "lktrace: deadlock:" in ln]
    assert all(comm in line for comm in WRITERS) and _dump(watched).name in line


def test_watch_stops_cleanly_on_sigterm(watched: Path) -> None:
    result = _result(watched)
    assert result["rc"] == 0 and result["stop_seconds"] < 30  # detaching is slow under TCG
    log = (watched / "watch.log").read_text()
    assert "Traceback" not in log and "lktrace: stopped after" in log
    assert {t["comm"] for t in result["blocked"]} >= set(WRITERS)  # still hung: not watch's
    assert len(pd.read_parquet(_dump(watched))) > 0  # plain pandas reads the dump
