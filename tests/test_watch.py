"""``lktrace watch`` on the synthetic source: deadlocks, long waits and old holds found
in a live stream, the dumps they leave, the ring's memory bound, signals, bad input.

Everything but the source is watch's own code (ring, checks, dumps); the source's
timestamps follow CLOCK_MONOTONIC as the kernel's do, so "stuck for 0.5 s" is real time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from lab_checks import WRITERS, analyze_json, assert_analyze_deadlock

from lktrace.collector.pipeline import Progress
from lktrace.collector.synthetic import (
    ATTEMPT,
    RESCAN,
    Scripted,
    SyntheticSource,
    abba,
    kallsyms,
    step,
    take,
)
from lktrace.collector.waitfor import Holder, Wait, find
from lktrace.collector.watch import Watcher, WatchRequest, parse_duration
from lktrace.trace import TraceMeta, read_trace

HERE = Path(__file__).resolve().parent


class Run:
    """A watcher on a synthetic source, run until ``until(watcher)`` (or 120 s)."""

    def __init__(self, tmp: Path, script: list[Scripted], **req) -> None:
        self.dir = tmp / "dumps"
        self.dir.mkdir()
        self.kmsg = tmp / "kmsg"
        self.source = SyntheticSource(
            total=None, chunk=65_536, clock=True, script=script, locking=True
        )
        opts = {"keep_s": 2.0, "max_mb": 64, "stuck_s": 0.5, "stuck_hard_s": 5.0} | req
        meta_extra = {"backend": "synthetic", "releases": "yes"}
        self.watcher = Watcher(
            self.source,
            kallsyms(),
            TraceMeta(command="test", extra=meta_extra),
            WatchRequest(dir=self.dir, **opts),
            kmsg=self.kmsg,
            log=(tmp / "watch.log").open("w"),
        )

    def run(self, until: Callable[[Watcher], bool]) -> Run:
        end = time.monotonic() + 120
        self.watcher.run(lambda: until(self.watcher) or time.monotonic() > end)
        return self

    def dumps(self, kind: str) -> list[Path]:
        return sorted(self.dir.glob(f"{kind}-*.parquet"))


def after_dump(seconds: float, events: int = 0) -> Callable[[Watcher], bool]:
    """Stop ``seconds`` after the first dump was written, and past ``events`` events."""
    seen: list[float] = []

    def until(w: Watcher) -> bool:
        if not seen and w.dumps.written:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > seconds and w.source.produced > events

    return until


def test_live_deadlock_in_millions_of_events(tmp_path: Path) -> None:
    run = Run(tmp_path, abba(2_000_000, 2_000_000)).run(after_dump(2.5, 4_000_000))
    (dump,) = run.dumps("deadlock")  # once, though it stays deadlocked for seconds more
    assert run.dumps("long-wait") == []
    assert run.source.produced > 4_000_000  # and watching went on
    line = run.kmsg.read_text()
    assert line.startswith("<3>lktrace: deadlock: rp-remove/5001 waits ")
    assert "held by numvfs=0/5002" in line and str(dump) in line
    text = dump.with_suffix(".txt").read_text()
    assert text.startswith("deadlock: ") and "DEADLOCK 1 (happened)" in text

    trace = read_trace(dump)
    assert trace.meta.extra["watch_reason"] == "deadlock"
    stuck = json.loads(trace.meta.extra["watch_stuck"])
    assert {(s["tid"], s["lock_class"]) for s in stuck} == {
        (5001, "device_lock"),
        (5002, "pci_rescan_remove_lock"),
    }
    assert all(s["waiting_s"] >= 0.5 and s["held_by"] for s in stuck)
    assert trace.num_events > 100_000  # the window of unrelated events around it

    (found,) = analyze_json(dump)["deadlocks"]
    tasks = {t["comm"]: t for t in found["tasks"]}
    assert set(tasks) == {"rp-remove", "numvfs=0"}
    assert any(f.startswith("unbind_store+") for f in tasks["rp-remove"]["waits_for"]["stack"])
    assert any(f.startswith("sriov_numvfs_store+") for f in tasks["numvfs=0"]["waits_for"]["stack"])


def test_long_wait_behind_a_busy_holder_is_not_a_deadlock(tmp_path: Path) -> None:
    holder, waiter = (6001, "slow-holder"), (6002, "waiter")
    script = [*take(500_000, holder, RESCAN), step(500_000, waiter, ATTEMPT, RESCAN)]
    run = Run(tmp_path, script, stuck_s=0.3, stuck_hard_s=2.0)
    seen_early: list[int] = []

    def until(w: Watcher) -> bool:
        if w.dumps.written and not seen_early:  # when the first dump appears
            seen_early.append(len(run.dumps("long-wait")))
        return after_dump(0)(w) or (bool(seen_early) and len(w.dumps.written) >= 2)

    run.run(until)
    assert run.dumps("deadlock") == []
    (dump,) = run.dumps("long-wait")
    (waited,) = json.loads(read_trace(dump).meta.extra["watch_stuck"])
    assert waited["tid"] == 6002 and waited["waiting_s"] >= 2.0  # not before --stuck-hard
    assert [h["tid"] for h in waited["held_by"]] == [6001]
    assert "long-wait: waiter/6002 waits" in run.kmsg.read_text()


@pytest.mark.parametrize("acquired_recorded", [True, False], ids=["in-ring", "event-lost"])
def test_lock_held_from_before_the_window(tmp_path: Path, acquired_recorded: bool) -> None:
    """A takes its lock, then 3 M events (several windows of 0.5 s) go by before the
    deadlock. The acquisition outlives the ring's window as an open hold, or, when its
    record was lost, only the held map (kernel side) knows A holds it."""
    script = abba(0, 3_000_000, emit=acquired_recorded)
    run = Run(tmp_path, script, keep_s=0.5).run(after_dump(0.5))
    (dump,) = run.dumps("deadlock")
    trace = read_trace(dump)
    window = json.loads(trace.meta.extra["watch_window"])
    assert window["events_evicted"] > 1_000_000
    stuck = {s["tid"]: s for s in json.loads(trace.meta.extra["watch_stuck"])}
    (held,) = stuck[5002]["held_by"]  # B waits for the rescan lock A took long ago
    assert held["tid"] == 5001 and held["held_map"]
    events = trace.table.to_pandas()
    a_took = events[(events["tid"] == 5001) & (events["event"] == "acquired")]
    if acquired_recorded:
        assert held["since_ns"] < window["first_ns"]
        assert list(a_took["ts_ns"]) == [held["since_ns"]]  # kept for the dump
        (found,) = analyze_json(dump)["deadlocks"]
        assert {t["tid"] for t in found["tasks"]} == {5001, 5002}
    else:
        assert held["since_ns"] is None and a_took.empty
        assert "known from the held map" in dump.with_suffix(".txt").read_text()


def test_ring_memory_stays_bounded_over_10m_events(tmp_path: Path) -> None:
    """10 M events through the ring (random lock traffic, so the open state is as large
    as it gets), with its bytes, and all the memory numpy and Arrow hold, looked at
    after each batch (numpy reports to tracemalloc; Arrow's pool counts its own)."""
    max_mb = 32
    dumps = tmp_path / "d"
    dumps.mkdir()
    source = SyntheticSource(total=10_000_000, chunk=65_536)
    w = Watcher(source, kallsyms(), TraceMeta(), WatchRequest(dir=dumps, max_mb=max_mb, keep_s=1e6))
    ring_peak, held_peak = [0], [0]

    def tick(progress: Progress) -> None:
        ring_peak[0] = max(ring_peak[0], w.ring.size)
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes()
        held_peak[0] = max(held_peak[0], held - baseline)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes()
        w.drain.run(lambda: source.done, tick, poll_ms=0)
    finally:
        tracemalloc.stop()
    assert w.drain.progress.events == 10_000_000
    assert w.ring.evicted > 8_000_000  # the bound, not the time window, did the evicting
    assert ring_peak[0] <= max_mb << 20
    assert w.ring.size > (max_mb << 20) * 0.6  # and it is used
    # the ring, plus a batch being decoded: nothing else grows with the events
    assert held_peak[0] <= (max_mb + 16) << 20, held_peak[0] / 2**20


def test_snapshot_on_sigusr1_and_clean_exit_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "synthetic_watch.py"), str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "lktrace: watching" in proc.stderr.readline()
        time.sleep(1)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("snapshot-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 0, err
    (snap,) = tmp_path.glob("snapshot-*.parquet")
    trace = read_trace(snap)
    assert trace.meta.extra["watch_reason"] == "snapshot (SIGUSR1)" and trace.num_events > 0
    assert "lktrace: stopped after" in err and "Traceback" not in err
    assert not (tmp_path / "kmsg").exists()  # a snapshot is not news for the kernel log


def _lktrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lktrace", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep", "2x"], "'2x' is not a duration"),
        (["--stuck", "0s"], "--stuck must be positive"),
        (["--stuck", "30s", "--stuck-hard", "10s"], "--stuck-hard must not be shorter"),
        (["--max-mb", "1"], "'--max-mb'"),
        (["--scope", "usb"], "'--scope'"),
        (["--dir", "/nonexistent/dumps"], ""),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = _lktrace("watch", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lktrace: ")
    assert message in done.stderr


def test_the_systemd_unit_runs_this_lktrace() -> None:
    unit = _lktrace("watch", "--print-unit").stdout
    assert f"ExecStart={sys.executable} -m lktrace watch --dir /var/lib/lktrace" in unit
    assert "StateDirectory=lktrace" in unit and "WantedBy=multi-user.target" in unit


def test_durations() -> None:
    assert [parse_duration(t) for t in ("120s", "2m", "500ms", "1h", "7", "0.5s")] == [
        120,
        120,
        0.5,
        3600,
        7,
        0.5,
    ]


# -- the wait-for graph on its own -------------------------------------------------


def wait(tid: int, lock: int, since_s: float = 0.0) -> Wait:
    return Wait(tid, f"t{tid}", lock, f"L{lock}", f"L{lock}", int(since_s * 1e9), "f+0x1")


def holds(**by_lock: int) -> dict[int, list[Holder]]:
    return {int(k[1:]): [Holder(t)] for k, t in by_lock.items()}


NOW = 100 * 10**9
HARD = 50 * 10**9


def test_waitfor_three_task_cycle_and_a_task_behind_it() -> None:
    stuck = [wait(1, 10), wait(2, 20), wait(3, 30), wait(4, 10)]
    (d,) = find(stuck, holds(L10=2, L20=3, L30=1), NOW, HARD)
    assert d.kind == "deadlock"
    assert [w.tid for w in d.waits] == [1, 2, 3]
    assert [w.tid for w in d.behind] == [4]


def test_waitfor_self_deadlock() -> None:
    (d,) = find([wait(7, 10)], holds(L10=7), NOW, HARD)
    assert d.kind == "deadlock" and [w.tid for w in d.waits] == [7]


def test_waitfor_long_wait_chain_only_past_the_hard_threshold() -> None:
    # 1 waits for 2, who waits for 3, who holds its lock and waits for nothing
    stuck = [wait(1, 10, since_s=10), wait(2, 20, since_s=90)]
    (lw,) = find(stuck, holds(L10=2, L20=3), NOW, HARD)
    assert lw.kind == "long-wait" and [w.tid for w in lw.waits] == [1, 2]
    assert find(stuck, holds(L10=2, L20=3), NOW, 95 * 10**9) == []
    unknown = find([wait(5, 50, since_s=0)], {}, NOW, HARD)
    assert unknown[0].kind == "long-wait" and "unknown" in unknown[0].line(NOW)


def test_waitfor_a_new_attempt_is_a_new_finding() -> None:
    """The same tasks stuck again on new attempts: a new finding (its key has the times)."""
    first = find([wait(1, 10, 0), wait(2, 20, 0)], holds(L10=2, L20=1), NOW, HARD)
    again = find([wait(1, 10, 5), wait(2, 20, 5)], holds(L10=2, L20=1), NOW, HARD)
    assert first[0].key != again[0].key


def test_both_sources_offer_what_watch_asks_of_the_kernel_side() -> None:
    from lktrace.collector.bpf import BccSource

    for name in ("poll", "take", "counters", "held", "in_flight", "close"):
        assert callable(getattr(BccSource, name)) and callable(getattr(SyntheticSource, name))


@pytest.mark.parametrize("kernel", ["6.1.0-57-amd64", "6.12.117+deb12-amd64"])
def test_dump_of_a_real_hang(kernel: str) -> None:
    """What ``lktrace watch`` wrote in the lab (tests/test_lab_watch.py) when the root
    port's remove and sriov_numvfs deadlocked, committed: it reads as a trace, says why,
    and analyze reports the deadlock with both tasks' stacks."""
    base = HERE / "data" / "watch" / kernel
    dump = base.with_name(f"{kernel}-deadlock.parquet")
    meta = read_trace(dump).meta
    assert meta.kernel == kernel and meta.extra["watch_reason"] == "deadlock"
    assert {s["comm"] for s in json.loads(meta.extra["watch_stuck"])} == set(WRITERS)
    assert_analyze_deadlock(dump)
    (line,) = base.with_name(f"{kernel}-kmsg.txt").read_text().splitlines()
    assert "lktrace: deadlock: " in line and all(c in line for c in WRITERS)
