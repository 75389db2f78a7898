"""A synthetic event source: raw records exactly as the BPF programs emit them, from a
seeded generator, with a matching symbol table and stack map. It stands in for BCC in
the tests and the drain benchmark; everything after it is the real pipeline.
"""

from __future__ import annotations

import time

import numpy as np

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


class SyntheticSource:
    """Yields ``chunk`` records per poll until ``total`` (``None``: until closed).

    Within a chunk the timestamps are slightly out of order (as per-CPU buffers
    interleave); ``lost_per_poll`` adds to the lost counter; ``stacks=False`` puts the
    frames into the records instead of stack ids (with stacks, 1 % of stack 2's records
    have none, as when the stack map refuses one); ``delay`` sleeps in each poll (seconds).
    """

    def __init__(
        self,
        total: int | None = 100_000,
        chunk: int = 10_000,
        stacks: bool = True,
        lost_per_poll: int = 0,
        delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.apis = list(APIS)
        self.stack_lookup = STACKS.get if stacks else None
        self.total = total
        self.delay = delay
        self.lost_per_poll = lost_per_poll
        self.produced = 0
        self.buffered = 0
        self.closed = False
        self._lost = 0
        self._chunks: list[bytes] = []
        self._template = self._make(chunk, stacks, np.random.default_rng(seed))
        self._template["ts"] += 1_000_000_000

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

    def poll(self, timeout_ms: int) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.total is not None and self.produced >= self.total:
            return
        n = len(self._template)
        if self.total is not None:
            n = min(n, self.total - self.produced)
        self._chunks.append(self._template[:n].tobytes())
        self._template["ts"] += n
        self.produced += n
        self.buffered += n * self._template.itemsize
        self._lost += self.lost_per_poll

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
        return self.total is not None and self.produced >= self.total
