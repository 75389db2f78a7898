"""A synthetic event source: raw records exactly as the BPF programs emit them, from a
seeded generator, with a matching symbol table and stack map. It stands in for BCC in
the tests and the benchmarks; everything after it is the real pipeline.

Besides the background stream, a script of records can be injected at given points
(real lock semantics: a deadlock, a long wait), and the source keeps the held-lock
state of the scripted tasks as the BPF program's ``held`` map does (:meth:`held`),
and whether each is inside a lock call (:meth:`in_flight`), also for records "lost"
on the way (``emit=False``), as a full ring buffer loses the record but not the map
update.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lktrace.collector.pipeline import HELD_DTYPE
from lktrace.probes.kallsyms import Kallsyms
from lktrace.probes.record import KIND_DEVICE, KIND_MUTEX, KIND_WRAPPED, event_dtype

BASE = 0xFFFFFFFF81000000
#: Functions of the synthetic kernel, 0x1000 bytes apart from BASE.
FUNCTIONS = (
    "mutex_lock",
    "mutex_unlock",
    "pci_lock_rescan_remove",
    "bpf_prog_6deef7357e7b4530_lk_e0",
    "remove_store",
    "unbind_store",
    "sriov_numvfs_store",
    "device_release_driver",
    "kernfs_fop_write_iter",
    "vfs_write",
)
APIS = ("mutex_lock", "mutex_unlock", "pci_lock_rescan_remove")
DEVICE = b"0000:01:00.0"


def addr(func: str, off: int = 0) -> int:
    """Address of ``func+off`` in the synthetic kernel."""
    return BASE + 0x1000 * FUNCTIONS.index(func) + off


#: Where BPF programs and trampolines run: outside the kernel's and modules' text.
JIT = 0xFFFFFFFFC0000000


def kallsyms() -> Kallsyms:
    """The synthetic kernel's symbol table (with one module, ``nvme``)."""
    lines = [f"{BASE:016x} T _stext"]
    lines += [f"{addr(f):016x} T {f}" for f in FUNCTIONS]
    lines.append(f"{BASE + 0x1000 * len(FUNCTIONS):016x} T _etext")
    lines.append(f"{JIT - 0x10000:016x} t nvme_probe [nvme]")
    return Kallsyms(lines, [f"nvme 4096 0 - Live {JIT - 0x10000:#x}"])


#: Kernel stack id → frames (innermost first), as the BPF stack map would hold them.
#: Stack 1 is what fentry gives: the BPF program, its trampoline, then the traced
#: function's fentry return; remove_store (a scope function) has a trampoline too.
STACKS = {
    1: [
        JIT + 0x3C8A,
        JIT + 0x9000,
        addr("mutex_lock", 5),
        addr("remove_store", 0x24),
        JIT + 0xA000,
        addr("remove_store", 5),
        addr("kernfs_fop_write_iter", 0x10C),
        addr("vfs_write", 0x1B0),
    ],
    2: [
        addr(FUNCTIONS[3], 0x40),
        addr("mutex_lock"),
        addr("unbind_store", 0x31),
        addr("kernfs_fop_write_iter", 0x10C),
    ],
    3: [addr("pci_lock_rescan_remove"), addr("sriov_numvfs_store", 0x58)],
    4: [addr("mutex_unlock"), addr("device_release_driver", 0x2A)],
}


#: Values of the records' ``event`` field (the EV_* enum of the BPF programs).
ATTEMPT, ACQUIRED, FAILED, RELEASED = range(4)


@dataclass(frozen=True)
class Scripted:
    """One injected record: emitted once ``after`` background records were produced.

    ``lock`` is an address; ``site`` one of :data:`STACKS` (its API and kind follow);
    ``emit=False`` updates the held-lock state without emitting the record (lost).
    """

    after: int
    tid: int
    comm: str
    event: int
    lock: int
    site: int = 1
    emit: bool = True


def scripted_lock(n: int) -> int:
    """The address of scripted lock ``n``: apart from the background's locks."""
    return 0xFFFF888200000000 + 0x40 * n


#: The scripted tasks and locks of :func:`abba`: the root port's remove, sriov_numvfs
#: writing 0; the rescan lock (taken through its wrapper, site 3), the PF's device_lock
#: (site 2).
REMOVE, NUMVFS = (5001, "rp-remove"), (5002, "numvfs=0")
RESCAN, DEVICE_LOCK = scripted_lock(1), scripted_lock(2)
SITES = {RESCAN: 3, DEVICE_LOCK: 2}


def step(after: int, task: tuple[int, str], event: int, lock: int, emit: bool = True) -> Scripted:
    """One scripted record of ``task`` (tid, comm) on ``lock`` (its site from SITES)."""
    return Scripted(after, task[0], task[1], event, lock, SITES.get(lock, 1), emit)


def take(after: int, task: tuple[int, str], lock: int, emit: bool = True) -> list[Scripted]:
    """An attempt and its acquisition (``emit=False``: the acquisition's record is lost)."""
    return [step(after, task, ATTEMPT, lock), step(after, task, ACQUIRED, lock, emit)]


def abba(first: int, then: int, emit: bool = True) -> list[Scripted]:
    """The deadlock of remove vs sriov_numvfs: REMOVE takes the rescan lock at ``first``;
    at ``then`` NUMVFS takes the device lock and each asks for the other's."""
    return [
        *take(first, REMOVE, RESCAN, emit),
        *take(then, NUMVFS, DEVICE_LOCK),
        step(then + 1, REMOVE, ATTEMPT, DEVICE_LOCK),
        step(then + 1, NUMVFS, ATTEMPT, RESCAN),
    ]


class SyntheticSource:
    """Yields ``chunk`` records per poll until ``total`` (``None``: until closed).

    Within a chunk the timestamps are slightly out of order (as per-CPU buffers
    interleave); ``lost_per_poll`` adds to the lost counter; ``stacks=False`` puts the
    frames into the records instead of stack ids (with stacks, 1 % of stack 2's records
    have none, as when the stack map refuses one); ``delay`` sleeps in each poll (seconds).

    ``clock=True`` stamps records with CLOCK_MONOTONIC at the poll, as the kernel's
    bpf_ktime_get_ns() would; ``rate`` (events/s, implies ``clock``) produces records
    as a kernel doing that many lock operations would, up to ``chunk`` per poll: what
    the consumer leaves behind beyond that is counted as lost, as a full ring buffer
    would. ``script`` injects :class:`Scripted` records. ``locking=True`` makes the
    background well-formed: each task takes one of its own locks, then releases it, over
    and over (no lock shared, none held or waited for long), so that only the script
    deadlocks.
    """

    def __init__(
        self,
        total: int | None = 100_000,
        chunk: int = 10_000,
        stacks: bool = True,
        lost_per_poll: int = 0,
        delay: float = 0.0,
        seed: int = 0,
        clock: bool = False,
        rate: float | None = None,
        script: Sequence[Scripted] = (),
        locking: bool = False,
    ) -> None:
        self.apis = list(APIS)
        self.stack_lookup = STACKS.get if stacks else None
        self.total = total
        self.delay = delay
        self.lost_per_poll = lost_per_poll
        self.clock = clock or rate is not None
        self.rate = rate
        self.produced = 0
        self.buffered = 0
        self.closed = False
        self._lost = 0
        self._chunks: list[bytes] = []
        rng = np.random.default_rng(seed)
        self._template = self._locking(chunk) if locking else self._make(chunk, stacks, rng)
        self._template["ts"] += 1_000_000_000
        self._script = sorted(script, key=lambda s: s.after)
        self._held: dict[tuple[int, int], int] = {}
        self._calling: dict[int, bool] = {}
        self._last_ns = time.monotonic_ns()

    @staticmethod
    def _make(n: int, stacks: bool, rng: np.random.Generator) -> np.ndarray:
        ev = np.zeros(n, dtype=event_dtype(stacks))
        site = rng.integers(1, 5, n)  # which of STACKS
        # without stacks every record carries its first frames; with stacks, the records
        # whose stack the map refused (-EEXIST, 1 in 100 of stack 2 here) do
        refused = (site == 2) & (rng.random(n) < 0.01) if stacks else site > 0
        ev["stack_id"] = np.where(refused, -17, site)
        width = ev["ips"].shape[1]
        for sid, frames in STACKS.items():
            ev["ips"][refused & (site == sid), : min(width, len(frames))] = frames[:width]
        ev["api"] = np.select([site == 3, site == 4], [2, 1], 0)
        ev["event"] = np.where(site == 4, 3, rng.integers(0, 2, n))
        ev["kind"] = np.select([site == 3, site == 2], [KIND_WRAPPED, KIND_DEVICE], KIND_MUTEX)
        ev["name"] = np.where(site == 2, DEVICE, b"")
        ev["lock"] = 0xFFFF888100000000 + 0x40 * rng.integers(0, 1000, n).astype(np.uint64)
        ev["tid"] = rng.integers(1000, 1064, n)
        ev["pid"] = ev["tid"]
        ev["cpu"] = ev["tid"] % 4
        ev["comm"] = np.array([b"writer", b"udevd", b"kworker/0:1"])[ev["tid"] % 3]
        # per-CPU buffers interleave: times arrive out of order by a few events
        ev["ts"] = np.arange(n) + rng.integers(0, 64, n)
        return ev

    @staticmethod
    def _locking(n: int, tasks: int = 64, locks: int = 16) -> np.ndarray:
        """Tasks taking turns: attempt, acquired, released of one of their own locks
        (``n`` rounded up to whole turns, so that the pattern runs on across chunks)."""
        turn = 3 * tasks
        n = -(-n // (turn * locks)) * turn * locks
        ev = np.zeros(n, dtype=event_dtype(True))
        i = np.arange(n)
        task, step, k = i % tasks, (i // tasks) % 3, (i // turn) % locks
        ev["tid"] = 1000 + task
        ev["pid"] = ev["tid"]
        ev["cpu"] = task % 4
        ev["comm"] = np.array([b"writer", b"udevd", b"kworker/0:1"])[task % 3]
        ev["event"] = np.array([ATTEMPT, ACQUIRED, RELEASED])[step]
        ev["api"] = np.where(step == 2, 1, 0)
        ev["stack_id"] = np.where(step == 2, 4, 1)
        ev["lock"] = 0xFFFF888100000000 + 0x40 * (task * locks + k).astype(np.uint64)
        ev["ts"] = i
        return ev

    def poll(self, timeout_ms: int) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.done:
            return
        now = time.monotonic_ns()
        n = len(self._template)
        if self.rate is not None:
            due = int(self.rate * (now - self._last_ns) / 1e9)
            if not due:
                time.sleep(min(timeout_ms, 2) / 1000)
                return
            self._lost += max(0, due - n)
            n = min(n, due)
        if self.total is not None:
            n = min(n, self.total - self.produced)
        if n > 0:
            records = self._template[:n]
            if self.clock:
                records = records.copy()
                records["ts"] = np.linspace(self._last_ns, now, n, dtype=np.int64)
            else:
                self._template["ts"] += n
            self._add(records)
            self.produced += n
        self._last_ns = now
        self._inject(now)
        self._lost += self.lost_per_poll

    def _add(self, records: np.ndarray) -> None:
        self._chunks.append(records.tobytes())
        self.buffered += records.nbytes

    def _inject(self, now: int) -> None:
        """Emit the scripted records that are due, and keep the held-lock state."""
        due = 0
        while due < len(self._script) and self._script[due].after <= self.produced:
            due += 1
        if not due:
            return
        todo, self._script = self._script[:due], self._script[due:]
        records = np.zeros(len(todo), dtype=self._template.dtype)
        for i, s in enumerate(todo):
            key = (s.tid, s.lock)
            self._calling[s.tid] = s.event == ATTEMPT
            if s.event == ACQUIRED:
                self._held[key] = self._held.get(key, 0) + 1
            elif s.event == RELEASED and self._held.get(key, 0) > 1:
                self._held[key] -= 1
            elif s.event == RELEASED:
                self._held.pop(key, None)
            r = records[i]
            r["ts"] = now if self.clock else self._template["ts"][0]
            r["lock"], r["tid"], r["pid"], r["cpu"] = s.lock, s.tid, s.tid, s.tid % 4
            r["comm"] = s.comm.encode()
            r["event"], r["stack_id"] = s.event, s.site
            r["api"] = {3: 2, 4: 1}.get(s.site, 0)
            r["kind"] = {3: KIND_WRAPPED, 2: KIND_DEVICE}.get(s.site, KIND_MUTEX)
            r["name"] = DEVICE if s.site == 2 else b""
        self._add(records[[s.emit for s in todo]])

    def add(self, script: Sequence[Scripted]) -> None:
        """Inject more :class:`Scripted` records (``after`` counts from the start)."""
        self._script = sorted([*self._script, *script], key=lambda s: s.after)

    def in_flight(self, tids: list[int]) -> dict[int, bool]:
        """Whether each scripted task is inside a lock call (the BPF per-task state)."""
        return {t: self._calling[t] for t in tids if t in self._calling}

    def held(self) -> np.ndarray:
        """The held-lock state, as the BPF ``held`` map holds it: (tid, lock, depth)."""
        rows = [(tid, lock, depth) for (tid, lock), depth in self._held.items()]
        return np.array(rows, dtype=HELD_DTYPE)

    def take(self) -> bytes:
        raw = b"".join(self._chunks)
        self._chunks = []
        self.buffered = 0
        return raw

    @property
    def lost(self) -> int:
        return self._lost

    def counters(self) -> dict[str, int]:
        return {"lost": self._lost}

    def close(self) -> None:
        self.closed = True

    @property
    def done(self) -> bool:
        return self.total is not None and self.produced >= self.total and not self._script
