"""The ``scale`` scenario: millions of lock events generated with numpy, for benchmarks.

N tasks take M mutexes in critical sections one to four deep, always in one
global order (the lock's index is its rank), with some trylocks,
interruptible and killable locks, some releases out of LIFO order and, now
and then, another task's trylock failing on a held lock.  K inversions are
injected: for each, one task takes locks ``a`` then ``a+spread`` and
another task takes them the other way round.  With rank neighbours (spread
1, the default) each injected pair closes exactly one cycle at both the
instance and the class level; further apart, the one reversed ordering
closes a cycle with every chain of ordered locks between the two, as one
bug does in a real trace.  A contiguous tenth of the locks are PCI device locks (class
``device_lock``), so ``device_lock`` stays one class node between the others.

Critical sections do not overlap in time, so every ``attempt`` but the
failing trylocks is granted at once.  Events are built a chunk at a time
(one Parquet row group each) as index arrays into small dictionaries: no
per-event Python objects.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa

from lktrace.sim.engine import frame
from lktrace.sim.meta import sim_meta
from lktrace.sim.scenarios import BOOT_NS
from lktrace.trace import EVENTS, SCHEMA, TraceWriter

APIS = ("mutex_lock", "mutex_lock_interruptible", "mutex_lock_killable", "mutex_trylock")
UNLOCK = len(APIS)  # index of mutex_unlock in the api dictionary
#: How often an acquisition uses each of :data:`APIS`.
API_P = (0.86, 0.05, 0.02, 0.07)
DEPTH_P = (0.4, 0.3, 0.2, 0.1)
CONTENDED_P = 0.02
NON_LIFO_P = 0.05
CHUNK = 1 << 20
MAX_LOCKS = 1 << 16
_ATTEMPT, _ACQUIRED, _FAILED, _RELEASED = range(4)
#: Slots of one critical section: acquire 0, a contender's failed trylock on
#: lock 0, acquire 1-3, then four releases.
_SLOTS = 14
_EVENTS_PER_SECTION = 3 * sum((i + 1) * p for i, p in enumerate(DEPTH_P)) + 2 * CONTENDED_P

_PATHS = (
    ("sim_ioctl", "__x64_sys_ioctl", "x64_sys_call", "do_syscall_64",
     "entry_SYSCALL_64_after_hwframe"),
    ("sim_work_fn", "process_one_work", "worker_thread", "kthread", "ret_from_fork",
     "ret_from_fork_asm"),
    ("sim_write", "vfs_write", "ksys_write", "__x64_sys_write", "x64_sys_call", "do_syscall_64",
     "entry_SYSCALL_64_after_hwframe"),
)  # fmt: skip
_COMMS = ("kworker/u8:{}", "fio", "postgres", "nginx", "qemu-system-x86", "containerd")


class Scale:
    """The fixed part of a scale trace: locks, tasks, dictionaries and stacks."""

    def __init__(
        self, rng: np.random.Generator, tasks: int, locks: int, inversions: int, spread: int = 1
    ) -> None:
        self.tasks, self.locks = tasks, locks
        idx = np.arange(locks)
        dev_lo, dev_hi = int(locks * 0.45), int(locks * 0.55)
        is_dev = (idx >= dev_lo) & (idx < dev_hi)
        self.addr = np.where(
            is_dev,
            0xFFFF888110000000 + idx.astype(np.uint64) * 0x1000 + 0x1A8,
            0xFFFF888120000000 + idx.astype(np.uint64) * 0x240 + 0x48,
        ).astype(np.uint64)
        funcs = [f"simfn_{i:05d}" for i in range(locks)]
        self.names = pa.array(
            [
                f"pci:0000:{i // 8 % 256:02x}:{i // 8 // 256:02x}.{i % 8}" if d else f"{a:#x}"
                for i, d, a in zip(idx.tolist(), is_dev.tolist(), self.addr.tolist(), strict=True)
            ]
        )
        self.classes = pa.array(["device_lock"] + [f"mutex@{f}" for f in funcs])
        self.class_idx = np.where(is_dev, 0, idx + 1).astype(np.int32)
        apis = (*APIS, "mutex_unlock")
        self.apis = pa.array(apis)
        self.callers = pa.array([frame(f, api) for f in funcs for api in apis])
        self.stacks = [
            [frame(api, ""), frame(f, api), frame(path[0], f)]
            + [frame(outer, inner) for inner, outer in pairwise(path)]
            for i, f in enumerate(funcs)
            for path in [_PATHS[i % len(_PATHS)]]
            for api in apis
        ]
        self.is_dev = is_dev
        self._tasks(rng)
        self.pairs = self._pairs(rng, inversions, spread)

    def _tasks(self, rng: np.random.Generator) -> None:
        sizes = []
        while sum(sizes) < self.tasks:
            sizes.append(int(rng.integers(1, 5)))
        sizes[-1] -= sum(sizes) - self.tasks
        tid, pids, comms = 3000, [], []
        names: dict[str, int] = {}  # a dictionary holds each comm once
        for p, size in enumerate(sizes):
            name = _COMMS[p % len(_COMMS)].format(p)
            pids += [tid] * size
            comms += [names.setdefault(name, len(names))] * size
            tid += size + int(rng.integers(1, 40))
        self.pid = np.array(pids, dtype=np.int32)
        self.tid = (self.pid + np.concatenate([np.arange(s) for s in sizes])).astype(np.int32)
        self.comm_idx = np.array(comms, dtype=np.int32)
        self.comms = pa.array(list(names))
        self.cpu = rng.integers(0, 8, self.tasks).astype(np.int32)

    def _pairs(self, rng: np.random.Generator, k: int, spread: int) -> np.ndarray:
        """``k`` disjoint lock pairs ``(a, a+spread)``, both plain mutexes."""
        plain = ~self.is_dev[:-spread] & ~self.is_dev[spread:]
        if spread == 1:
            # Take every other candidate so that no two pairs share a lock.
            starts = np.flatnonzero(plain)[::2]
        else:  # a in the lower half of its 2*spread block: a+spread is in the upper half
            starts = np.flatnonzero(plain & (np.arange(len(plain)) % (2 * spread) < spread))
        if k > len(starts):
            raise ValueError(f"{self.locks} locks allow at most {len(starts)} inversions")
        a = np.sort(rng.choice(starts, size=k, replace=False))
        return np.stack([a, a + spread], axis=1)


def _sections(rng: np.random.Generator, s: Scale, n: int) -> dict[str, np.ndarray]:
    """``n`` random critical sections: task, locks in rank order, APIs and flags."""
    depth = rng.choice(4, size=n, p=DEPTH_P) + 1
    chain = rng.integers(0, s.locks, size=(n, 4))
    chain[np.arange(4) >= depth[:, None]] = s.locks
    chain.sort(axis=1)
    # A lock drawn twice is taken once: its duplicate becomes unused.
    dup = np.zeros(chain.shape, dtype=bool)
    dup[:, 1:] = (chain[:, 1:] == chain[:, :-1]) & (chain[:, 1:] < s.locks)
    chain[dup] = s.locks
    chain.sort(axis=1)
    api = rng.choice(len(APIS), size=(n, 4), p=API_P)
    api[np.append(s.is_dev, False)[chain]] = 0  # device_lock() is mutex_lock()
    task = rng.integers(0, s.tasks, size=n)
    return {
        "task": task,
        "depth": (chain < s.locks).sum(axis=1),
        "chain": chain,
        "api": api,
        "contended": rng.random(n) < CONTENDED_P,
        "contender": (task + 1 + rng.integers(0, s.tasks - 1, size=n)) % s.tasks,
        "non_lifo": rng.random(n) < NON_LIFO_P,
    }


def _inject(rng: np.random.Generator, s: Scale, sec: dict[str, np.ndarray], target: int) -> None:
    """Make sections take each pair forward and reversed, by two different tasks.

    The sections chosen are among the first ``target // 14 - 1``: at no more
    than 14 events each, :func:`_fit` keeps them all.
    """
    k = len(s.pairs)
    rows = rng.choice(target // _SLOTS - 1, size=2 * k, replace=False)
    forward, reverse = rows[:k], rows[k:]
    sec["chain"][rows] = s.locks
    sec["chain"][forward, :2] = s.pairs
    sec["chain"][reverse, :2] = s.pairs[:, ::-1]
    sec["depth"][rows] = 2
    sec["api"][rows] = 0
    sec["non_lifo"][rows] = False
    sec["task"][reverse] = (sec["task"][forward] + 1) % s.tasks


def _fit(sec: dict[str, np.ndarray], target: int, nlocks: int) -> dict[str, np.ndarray]:
    """The leading sections, adjusted to add up to exactly ``target`` events."""
    count = 3 * sec["depth"] + 2 * sec["contended"]
    keep = int(np.searchsorted(np.cumsum(count), target, side="right"))
    rest = target - int(count[:keep].sum())
    if rest == 1:
        keep -= 1
        rest += int(count[keep])
    if rest % 2:
        # One more section, cut down to a single lock: 3 events.
        sec["chain"][keep, 1:] = nlocks
        sec["depth"][keep] = 1
        sec["contended"][keep] = sec["non_lifo"][keep] = False
        keep += 1
        rest -= 3
    sec = {k: v[:keep] for k, v in sec.items()}
    # The remaining even number: other tasks' failed trylocks, 2 events each.
    free = np.flatnonzero(~sec["contended"])[: rest // 2]
    if len(free) < rest // 2:
        raise ValueError(f"cannot fit {target} events")
    sec["contended"][free] = True
    return sec


#: The event of each slot of a section.
_SLOT_EVENTS = np.array(
    [_ATTEMPT, _ACQUIRED, _ATTEMPT, _FAILED] + [_ATTEMPT, _ACQUIRED] * 3 + [_RELEASED] * 4,
    dtype=np.int32,
)


def _events(
    rng: np.random.Generator, s: Scale, sec: dict[str, np.ndarray], seq0: int, t0: int
) -> pa.Table:
    """Lay the sections out slot by slot and flatten them into trace rows."""
    n = len(sec["task"])
    chain, depth, api, task = sec["chain"], sec["depth"], sec["api"], sec["task"]
    levels = np.arange(4)
    release = np.take_along_axis(chain, np.clip(depth[:, None] - 1 - levels, 0, 3), axis=1)
    swap = np.flatnonzero(sec["non_lifo"] & (depth > 1))
    release[swap, :2] = release[swap, 1::-1]
    first, contender = chain[:, :1], sec["contender"][:, None]
    col = np.ones((n, 1), dtype=np.int64)
    lock = np.hstack([first, first, first, first, np.repeat(chain[:, 1:], 2, axis=1), release])
    apis = np.hstack(
        [api[:, :1], api[:, :1], col * 3, col * 3, np.repeat(api[:, 1:], 2, axis=1)]
        + [col * UNLOCK] * 4
    )
    who = np.hstack([task[:, None]] * 2 + [contender] * 2 + [task[:, None]] * 10)
    held = depth[:, None] > levels[1:]
    valid = np.hstack(
        [col > 0] * 2
        + [sec["contended"][:, None]] * 2
        + [np.repeat(held, 2, axis=1), depth[:, None] > levels]
    ).ravel()
    lock, apis, who = lock.ravel()[valid], apis.ravel()[valid], who.ravel()[valid]
    event = np.broadcast_to(_SLOT_EVENTS, (n, _SLOTS)).ravel()[valid]
    slot = np.broadcast_to(np.arange(_SLOTS), (n, _SLOTS)).ravel()[valid]
    m = len(lock)
    # ns since the previous event: a few us between sections, less inside one,
    # tens of ns from an attempt to its outcome.
    gap = np.where(
        slot == 0,
        500 + rng.exponential(4000, m),
        np.where((event == _ACQUIRED) | (event == _FAILED), 30 + rng.exponential(60, m),
                 60 + rng.exponential(500, m)),
    ).astype(np.int64)  # fmt: skip
    site = (lock * (UNLOCK + 1) + apis).astype(np.int32)
    lock32 = lock.astype(np.int32)

    def dictionary(indices: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), values)

    columns = {
        "seq": np.arange(seq0, seq0 + m, dtype=np.uint64),
        "ts_ns": t0 + np.cumsum(gap),
        "cpu": s.cpu[who],
        "pid": s.pid[who],
        "tid": s.tid[who],
        "comm": dictionary(s.comm_idx[who], s.comms),
        "event": dictionary(event, _EVENT_NAMES),
        "api": dictionary(apis, s.apis),
        "lock_addr": s.addr[lock],
        "lock_class": dictionary(s.class_idx[lock32], s.classes),
        "lock_name": dictionary(lock32, s.names),
        "caller": dictionary(site, s.callers),
        "stack_id": site,
    }
    return pa.Table.from_arrays([pa.array(v) if isinstance(v, np.ndarray) else v
                                 for v in columns.values()], schema=SCHEMA)  # fmt: skip


_EVENT_NAMES = pa.array(EVENTS)


def write_scale(
    path: Path,
    seed: int,
    command: str,
    events: int = 1_000_000,
    tasks: int = 64,
    locks: int = 512,
    inversions: int = 2,
    spread: int = 1,
) -> Path:
    """Generate the scale trace into ``path``, one row group per chunk of events."""
    if tasks < 2:
        raise ValueError("needs at least 2 tasks")
    if not 8 <= locks <= MAX_LOCKS:
        raise ValueError(f"takes 8 to {MAX_LOCKS} locks")
    if not 1 <= spread < locks:
        raise ValueError(f"--spread must be from 1 to {locks - 1} (the locks' ranks)")
    if inversions < 0 or events < 64 + 28 * inversions:
        raise ValueError(f"{inversions} inversions need at least {64 + 28 * inversions} events")
    s = Scale(np.random.default_rng([seed, 1 << 32]), tasks, locks, inversions, spread)
    t = BOOT_NS + (seed % 997) * 7_000_000
    with TraceWriter(path, row_group_size=CHUNK) as w:
        for chunk, start in enumerate(range(0, events, CHUNK)):
            target = min(CHUNK, events - start)
            rng = np.random.default_rng([seed, chunk])
            sec = _sections(rng, s, int(target / _EVENTS_PER_SECTION * 1.05) + 16)
            if chunk == 0:
                _inject(rng, s, sec, target)
            table = _events(rng, s, _fit(sec, target, locks), start, t)
            t = int(table["ts_ns"][-1].as_py())
            w.write(table)
        meta = sim_meta(
            kernel="6.12.0-sim-scale",
            kernel_version="#1 SMP PREEMPT_DYNAMIC 6.12.0 (simulated, synthetic locks)",
            scenario="scale",
            seed=seed,
            command=command,
            duration_ns=t - BOOT_NS + 1_000_000,
            stacks=s.stacks,
        )
        w.close(meta)
    return Path(path)
