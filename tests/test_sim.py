"""The simulator's scenarios hold the lock sequences they claim, in trace format v1."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lktrace.sim import SCENARIOS, SimError, scale, simulate
from lktrace.summary import summarize
from lktrace.trace import SCHEMA, Trace, read_trace
from lktrace.version import writer

RESCAN = "pci_rescan_remove_lock"
PF = "pci:0000:01:00.0"
FRAME = re.compile(r"^[A-Za-z_][\w.]*\+0x[0-9a-f]+$")

Lock = tuple[int, str]  # (lock_addr, lock_name): an instance


@dataclass
class Replay:
    """Per-task lock state after replaying a trace in (ts_ns, seq) order."""

    held: dict[int, dict[Lock, int]] = field(default_factory=lambda: defaultdict(dict))
    pending: dict[int, dict] = field(default_factory=dict)
    #: (held, attempted, tid) for each blocking attempt made while holding a lock
    edges: set[tuple[Lock, Lock, int]] = field(default_factory=set)
    max_depth: dict[tuple[int, Lock], int] = field(default_factory=lambda: defaultdict(int))
    #: failed trylocks whose lock was not held by another task
    bogus_failures: int = 0
    non_lifo_releases: int = 0
    #: most locks one task held at once
    max_nesting: int = 0
    first: dict[tuple[int, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, trace: Trace) -> Replay:
        r = cls()
        for i, row in enumerate(trace.sorted().to_pylist()):
            r.step(i, row)
        return r

    def step(self, i: int, row: dict) -> None:
        tid, lock, event = row["tid"], (row["lock_addr"], row["lock_name"]), row["event"]
        held = self.held[tid]
        self.first.setdefault((tid, f"{event}:{row['lock_class']}"), i)
        if event == "attempt":
            self.pending[tid] = row
            if row["api"] != "mutex_trylock":
                self.edges.update((h, lock, tid) for h in held if h != lock)
        elif event == "acquired":
            del self.pending[tid]
            held[lock] = held.get(lock, 0) + 1
            self.max_depth[tid, lock] = max(self.max_depth[tid, lock], held[lock])
            self.max_nesting = max(self.max_nesting, len(held))
        elif event == "failed":
            del self.pending[tid]
            holders = [t for t, h in self.held.items() if lock in h and t != tid]
            self.bogus_failures += not holders
        else:
            if list(held)[-1] != lock:
                self.non_lifo_releases += 1
            held[lock] -= 1
            if not held[lock]:
                del held[lock]

    def holding(self, tid: int) -> set[str]:
        return {name for _, name in self.held[tid]}


def comm_tids(trace: Trace, comm: str) -> list[int]:
    t = trace.table
    rows = t.filter(pc.equal(t["comm"].cast(pa.string()), comm))
    return sorted(set(rows["tid"].to_pylist()))


def names(edges: set, tid: int) -> set[tuple[str, str]]:
    return {(a[1], b[1]) for a, b, t in edges if t == tid}


def stack_of(trace: Trace, row: dict) -> list[str]:
    return trace.stack(row["stack_id"])


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trace]:
    out = tmp_path_factory.mktemp("sim")
    found = {}
    for name in SCENARIOS:
        params = {"events": 30_000, "inversions": 3} if name == "scale" else {}
        found[name] = read_trace(simulate(name, out / f"{name}.parquet", seed=7, **params))
    return found


def test_registry_describes_each_scenario() -> None:
    assert {"stock-deadlock", "stock-sequential", "stock-selfdeadlock", "patched", "scale"} <= set(
        SCENARIOS
    )
    for s in SCENARIOS.values():
        assert s.description and "\n" not in s.description


@pytest.mark.parametrize("seed", range(12))
def test_stock_deadlock_blocks_both_paths_for_good(tmp_path: Path, seed: int) -> None:
    trace = read_trace(simulate("stock-deadlock", tmp_path / "t.parquet", seed=seed))
    r = Replay.of(trace)
    assert len(r.pending) == 2
    waits = {tid: row["lock_name"] for tid, row in r.pending.items()}
    (remover, _), (unbinder, _) = sorted(waits.items(), key=lambda kv: kv[1] != PF)
    # Each holds the lock the other waits for.
    assert waits == {remover: PF, unbinder: RESCAN}
    assert RESCAN in r.holding(remover) and PF not in r.holding(remover)
    assert PF in r.holding(unbinder) and RESCAN not in r.holding(unbinder)
    remove_stack = stack_of(trace, r.pending[remover])
    unbind_stack = stack_of(trace, r.pending[unbinder])
    assert remove_stack[0].startswith("mutex_lock+")
    assert any(f.startswith("remove_store+") for f in remove_stack)
    assert any(f.startswith("pci_stop_and_remove_bus_device_locked+") for f in remove_stack)
    assert unbind_stack[0].startswith("pci_lock_rescan_remove+")
    assert [f.split("+")[0] for f in unbind_stack[1:3]] == ["sriov_del_vfs", "sriov_disable"]
    assert any(f.startswith("unbind_store+") for f in unbind_stack)
    assert r.pending[unbinder]["caller"].startswith("sriov_del_vfs+")
    # Background tasks came and went.
    others = set(r.held) - {remover, unbinder}
    assert others and not any(r.held[t] for t in others)


def test_stock_sequential_completes_with_the_inversion_on_record(
    traces: dict[str, Trace],
) -> None:
    trace = traces["stock-sequential"]
    r = Replay.of(trace)
    assert not r.pending
    assert not any(r.held.values())
    remover, unbinder = (
        next(t for t, stack in _firsts(trace, "device_lock").items() if key in stack)
        for key in ("remove_store", "unbind_store")
    )
    assert (PF, RESCAN) in names(r.edges, unbinder)
    assert (RESCAN, PF) in names(r.edges, remover)
    ts = trace.sorted()
    times = {t: ts.filter(pc.equal(ts["tid"], t))["ts_ns"] for t in (remover, unbinder)}
    assert pc.max(times[unbinder]).as_py() < pc.min(times[remover]).as_py()


def _firsts(trace: Trace, lock_class: str) -> dict[int, str]:
    """Per task, the stack frames (joined) of its first attempt on ``lock_class``."""
    found: dict[int, str] = {}
    for row in trace.sorted().to_pylist():
        if row["event"] == "attempt" and row["lock_class"] == lock_class:
            found.setdefault(row["tid"], " ".join(trace.stack(row["stack_id"])))
    return found


def test_stock_selfdeadlock_nests_the_rescan_lock_and_hangs(traces: dict[str, Trace]) -> None:
    trace = traces["stock-selfdeadlock"]
    r = Replay.of(trace)
    (hotplug,) = comm_tids(trace, "irq/24-pciehp")
    waiting = r.pending[hotplug]
    assert waiting["lock_name"] == RESCAN and waiting["api"] == "pci_lock_rescan_remove"
    assert RESCAN in r.holding(hotplug) and PF in r.holding(hotplug)
    assert waiting["caller"].startswith("sriov_del_vfs+")
    assert "pciehp_unconfigure_device" in " ".join(stack_of(trace, waiting))
    # Only one grant of the rescan lock to the hotplug thread, never a nested one.
    assert r.max_depth[hotplug, (waiting["lock_addr"], RESCAN)] == 1
    # The later bus rescan queues behind it.
    (rescan,) = comm_tids(trace, "bash")
    assert r.pending[rescan]["lock_name"] == RESCAN
    assert len(r.pending) == 2


def test_patched_nests_to_depth_two_and_completes(traces: dict[str, Trace]) -> None:
    trace = traces["patched"]
    assert trace.meta.kernel == "6.12.0-sim-v14"
    r = Replay.of(trace)
    assert not r.pending
    assert not any(r.held.values())
    rescan_addr = trace.table.filter(pc.equal(trace.table["lock_name"].cast(pa.string()), RESCAN))[
        "lock_addr"
    ][0].as_py()
    for comm in ("irq/24-pciehp", "irq/26-pciehp"):
        (tid,) = comm_tids(trace, comm)
        assert r.max_depth[tid, (rescan_addr, RESCAN)] == 2
    (slot_b,) = comm_tids(trace, "irq/25-pciehp")
    assert r.max_depth[slot_b, (rescan_addr, RESCAN)] == 1


def test_patched_remove_store_takes_device_lock_first(traces: dict[str, Trace]) -> None:
    trace = traces["patched"]
    r = Replay.of(trace)
    remover = next(t for t, s in _firsts(trace, "device_lock").items() if "remove_store" in s)
    assert r.first[remover, "attempt:device_lock"] < r.first[remover, f"attempt:{RESCAN}"]
    assert ("pci:0000:02:00.0", RESCAN) in names(r.edges, remover)


def test_patched_keeps_the_open_races_as_predicted_inversions(traces: dict[str, Trace]) -> None:
    trace = traces["patched"]
    r = Replay.of(trace)
    firsts = _firsts(trace, "device_lock")
    unbinder = next(t for t, s in firsts.items() if "unbind_store" in s)
    numvfs = next(t for t, s in firsts.items() if "sriov_numvfs_store" in s)
    (slot_b,) = comm_tids(trace, "irq/25-pciehp")
    (slot_c,) = comm_tids(trace, "irq/26-pciehp")
    assert ("pci:0000:03:00.0", RESCAN) in names(r.edges, unbinder)
    assert (RESCAN, "pci:0000:03:00.0") in names(r.edges, slot_b)
    assert ("pci:0000:04:00.0", RESCAN) in names(r.edges, numvfs)
    assert (RESCAN, "pci:0000:04:00.0") in names(r.edges, slot_c)
    numvfs_stack = " ".join(
        frame
        for row in trace.sorted().to_pylist()
        if row["tid"] == numvfs and row["lock_name"] == RESCAN
        for frame in trace.stack(row["stack_id"])
    )
    assert "sriov_add_vfs" in numvfs_stack and "ice_sriov_configure" in numvfs_stack


@pytest.mark.parametrize("name", ["stock-deadlock", "stock-selfdeadlock", "patched", "scale"])
def test_columns_follow_the_conventions(traces: dict[str, Trace], name: str) -> None:
    trace = traces[name]
    rows = trace.table.to_pylist()
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))
    assert [r["ts_ns"] for r in rows] == sorted(r["ts_ns"] for r in rows)
    addr_of: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        addr_of[row["lock_name"]].add(row["lock_addr"])
        stack = trace.stack(row["stack_id"])
        assert all(FRAME.match(f) for f in stack), stack
        assert stack[0].split("+")[0] == row["api"]
        assert stack[1] == row["caller"]
        assert stack[-1].split("+")[0] in (
            "entry_SYSCALL_64_after_hwframe",
            "ret_from_fork_asm",
        )
        if row["lock_class"] == "device_lock":
            # device_lock(), device_trylock(), device_unlock() are inline.
            assert row["api"] in ("mutex_lock", "mutex_trylock", "mutex_unlock")
            assert re.fullmatch(r"pci:0000:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]", row["lock_name"])
        elif row["lock_class"] == RESCAN:
            assert row["api"] in ("pci_lock_rescan_remove", "pci_unlock_rescan_remove")
            assert row["lock_name"] == RESCAN
        else:
            assert row["lock_class"].startswith("mutex@")
            assert row["lock_name"] == hex(row["lock_addr"])
            assert row["api"].startswith("mutex_")
    # One address per instance name, and no two names share an address.
    assert all(len(a) == 1 for a in addr_of.values())
    assert len({a for s in addr_of.values() for a in s}) == len(addr_of)
    meta = trace.meta
    assert meta.host == "simulator" and meta.lost_events == 0
    assert meta.extra == {"source": "simulator", "scenario": name, "seed": "7", "writer": writer()}
    assert meta.command.startswith(f"lktrace simulate {name} -o ")
    assert "pci_lock_rescan_remove" in meta.probes and "mutex_lock" in meta.probes
    assert meta.duration_ns >= rows[-1]["ts_ns"] - rows[0]["ts_ns"] > 0


def test_same_seed_same_trace_other_seed_other_interleaving(tmp_path: Path) -> None:
    for name, params in (("patched", {}), ("scale", {"events": 5000})):
        a, b, c = (
            read_trace(simulate(name, tmp_path / f"{name}{i}.parquet", seed=s, **params))
            for i, s in enumerate((3, 3, 4))
        )
        assert a.table.equals(b.table) and a.meta.stacks == b.meta.stacks
        assert a.table["ts_ns"] != c.table["ts_ns"]


@pytest.mark.parametrize(("events", "inversions"), [(20_001, 3), (31_337, 0), (64, 0), (120, 2)])
def test_scale_writes_exactly_the_events_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: int, inversions: int
) -> None:
    monkeypatch.setattr(scale, "CHUNK", 7000)
    path = simulate("scale", tmp_path / "s.parquet", seed=1, events=events, tasks=5,
                    locks=40, inversions=inversions)  # fmt: skip
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-events // 7000)
    trace = read_trace(path)
    assert trace.num_events == events
    assert trace.table.schema == SCHEMA
    assert len(set(trace.table["tid"].to_pylist())) <= 5
    assert len(set(trace.table["lock_addr"].to_pylist())) <= 40
    order = {(x, y) for x, y, _ in Replay.of(trace).edges}
    assert len({frozenset(p) for p in order if p[::-1] in order}) == inversions
    # lktrace info's counts work across row groups.
    assert summarize(trace)["events"] == events


def test_scale_shows_the_injected_inversions_and_nothing_else(traces: dict[str, Trace]) -> None:
    trace = traces["scale"]
    r = Replay.of(trace)
    order = {(a, b) for a, b, _ in r.edges}
    reversed_pairs = {frozenset((a, b)) for a, b in order if (b, a) in order}
    assert len(reversed_pairs) == 3
    # Each inversion was taken by two different tasks.
    for pair in reversed_pairs:
        a, b = tuple(pair)
        tids = {t for x, y, t in r.edges if {x, y} == {a, b}}
        assert len(tids) >= 2
    # The same three, and no others, between lock classes (device_lock is one node).
    table = trace.table
    class_of = dict(
        zip(table["lock_name"].to_pylist(), table["lock_class"].to_pylist(), strict=True)
    )
    classes = {(class_of[a[1]], class_of[b[1]]) for a, b in order}
    classes = {(a, b) for a, b in classes if a != b}
    reversed_classes = {frozenset(p) for p in classes if p[::-1] in classes}
    assert reversed_classes == {frozenset(class_of[x[1]] for x in p) for p in reversed_pairs}
    # A plain, consistent run otherwise: nothing pending, nothing held, every
    # failed trylock met a lock another task held, some releases out of order.
    assert not r.pending and not any(r.held.values())
    assert r.bogus_failures == 0
    assert r.non_lifo_releases > 0
    apis = set(trace.table["api"].cast(pa.string()).to_pylist())
    assert {"mutex_trylock", "mutex_lock_interruptible", "mutex_lock_killable"} <= apis
    events = set(trace.table["event"].cast(pa.string()).to_pylist())
    assert events == {"attempt", "acquired", "failed", "released"}
    assert "device_lock" in set(trace.table["lock_class"].cast(pa.string()).to_pylist())
    assert max(r.max_depth.values()) == 1
    assert r.max_nesting == 4


def test_bad_requests_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SimError, match="unknown scenario 'nope'"):
        simulate("nope", tmp_path / "x.parquet")
    with pytest.raises(SimError, match="takes no --events"):
        simulate("patched", tmp_path / "x.parquet", events=10)
    with pytest.raises(SimError, match="at least 2 tasks"):
        simulate("scale", tmp_path / "x.parquet", tasks=1)
    assert not (tmp_path / "x.parquet").exists()


def _lktrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lktrace", *args], capture_output=True, text=True, check=False
    )


def test_cli_simulate_then_info(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    done = _lktrace("simulate", "stock-deadlock", "-o", str(path), "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert read_trace(path).meta.command == f"lktrace simulate stock-deadlock -o {path} --seed 2"
    info = _lktrace("info", str(path))
    assert info.returncode == 0, info.stderr
    assert "stock-deadlock" in info.stdout and "pci_rescan_remove_lock" in info.stdout
    listed = _lktrace("simulate", "--list")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(SCENARIOS)


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "nope", "-o", "x.parquet"],
        ["simulate", "patched", "-o", "x.parquet", "--locks", "9"],
        ["simulate", "scale"],
    ],
)
def test_cli_simulate_usage_errors(tmp_path: Path, args: list[str]) -> None:
    done = _lktrace(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("lktrace: ") and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
