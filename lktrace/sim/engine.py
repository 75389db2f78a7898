"""Discrete-event engine: tasks walk kernel call paths and take mutexes.

A task is a generator of operations.  ``Push``/``Pop`` keep its call stack
(so every event carries the stack at that point), ``Delay`` spends time, and
the lock operations emit trace events with real mutex semantics: a lock held
by another task blocks the caller until it is handed over on release, a
trylock on a held lock fails, a reentrant lock lets its owner nest (owner +
depth, like the patched ``pci_lock_rescan_remove``) and a non-reentrant lock
attempted again by its owner blocks that owner for good.

The engine always runs the task whose next operation is due first; the
seeded random costs of each step decide the interleaving.  When every task
left is blocked, the run ends with those attempts pending, as the trace of a
hung machine does.
"""

from __future__ import annotations

import functools
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from lktrace.sim.meta import sim_meta
from lktrace.trace import COLUMNS, SCHEMA, StackTable, write_trace

US = 1_000
MS = 1_000_000


class Push(NamedTuple):
    """Enter kernel function ``func`` (no event)."""

    func: str


class Pop(NamedTuple):
    """Return from the innermost function (no event)."""


class Delay(NamedTuple):
    """Spend between ``lo`` and ``hi`` ns (work, sleeps, device I/O)."""

    lo: int
    hi: int


class Lock(NamedTuple):
    """A blocking acquisition through ``api`` (``mutex_lock``, a wrapper, …)."""

    mutex: Mutex
    api: str


class TryLock(NamedTuple):
    """A trylock: acquired when free, ``failed`` otherwise."""

    mutex: Mutex
    api: str


class Unlock(NamedTuple):
    """A release through ``api``."""

    mutex: Mutex
    api: str


class _Grant(NamedTuple):
    """Internal: the ``acquired`` (or ``failed``) event that follows an attempt."""

    mutex: Mutex
    api: str
    event: str
    stack_id: int


Op = Push | Pop | Delay | Lock | TryLock | Unlock
POP = Pop()


def kfunc(fn: Callable[..., Iterator[Op]]) -> Callable[..., Iterator[Op]]:
    """Make a generator a kernel function: its name is a frame while it runs."""
    name = fn.__name__

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Iterator[Op]:
        yield Push(name)
        yield from fn(*args, **kwargs)
        yield POP

    return run


def call(names: Sequence[str], body: Iterator[Op]) -> Iterator[Op]:
    """Run ``body`` inside the pass-through frames ``names`` (outermost first)."""
    for name in names:
        yield Push(name)
    yield from body
    for _ in names:
        yield POP


def offset(func: str, callee: str) -> int:
    """A stable, plausible offset: of ``func``'s call to ``callee``, or of a probe in it."""
    span = 0x3C0 if callee else 0x30  # a probed function is hit near its entry
    return 0x10 + (zlib.crc32(f"{func}>{callee}".encode()) % span)


def frame(func: str, callee: str) -> str:
    """The symbolised frame ``func+0xoff`` of the call from ``func`` to ``callee``."""
    return f"{func}+{offset(func, callee):#x}"


@dataclass(eq=False)
class Mutex:
    """A kernel mutex as the trace names it, with its run-time owner and waiters."""

    addr: int
    lock_class: str
    name: str
    reentrant: bool = False
    owner: Task | None = None
    depth: int = 0
    waiters: deque[Task] = field(default_factory=deque)


@dataclass(eq=False)
class Task:
    """A kernel task: identity, the ops it will run and its scheduling state."""

    comm: str
    pid: int
    tid: int
    cpu: int
    ops: Iterator[Op]
    at: int
    after: Task | None = None
    frames: list[str] = field(default_factory=list)
    next_op: Op | _Grant | None = None
    waiting: Mutex | None = None


@dataclass
class Events:
    """Trace columns collected in event order."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})

    def add(self, **row: Any) -> None:
        for key, value in row.items():
            self.columns[key].append(value)

    def __len__(self) -> int:
        return len(self.columns["seq"])

    def table(self) -> pa.Table:
        """The events as a table of :data:`~lktrace.trace.SCHEMA`."""
        return pa.Table.from_pydict(self.columns, schema=SCHEMA)


class Engine:
    """Runs tasks over shared mutexes and records their lock events."""

    def __init__(self, seed: int, start_ns: int, cpus: int = 4) -> None:
        self.rng = np.random.default_rng(seed)
        self.now = start_ns
        self.start_ns = start_ns
        self.cpus = cpus
        self.tasks: list[Task] = []
        self.events = Events()
        self.stacks = StackTable()
        self._stack_ids: dict[tuple[tuple[str, ...], str], int] = {}

    def jitter(self, lo: int, hi: int) -> int:
        """A random duration in ``[lo, hi]`` ns."""
        return int(self.rng.integers(lo, hi + 1))

    def spawn(
        self,
        comm: str,
        pid: int,
        body: Iterator[Op],
        start_ns: int,
        tid: int | None = None,
        after: Task | None = None,
    ) -> Task:
        """Add a task starting ``start_ns`` after the run's start, or after ``after`` ends."""
        task = Task(
            comm=comm,
            pid=pid,
            tid=pid if tid is None else tid,
            cpu=int(self.rng.integers(self.cpus)),
            ops=body,
            at=start_ns if after is not None else self.start_ns + start_ns,
            after=after,
        )
        self.tasks.append(task)
        return task

    def run(self) -> None:
        """Run until every task has finished or is blocked for good."""
        for task in self.tasks:
            self._advance(task, 0)
        while True:
            ready = [t for t in self.tasks if self._ready(t)]
            if not ready:
                return
            due = min(t.at for t in ready)
            first = [t for t in ready if t.at == due]
            task = first[int(self.rng.integers(len(first)))] if len(first) > 1 else first[0]
            self.now = max(self.now, task.at)
            self._step(task)

    def write(self, path: str | Path, **meta: Any) -> Path:
        """Write the events to ``path``; ``meta`` are :func:`~lktrace.sim.meta.sim_meta`'s."""
        ts = self.events.columns["ts_ns"]
        duration = (ts[-1] - self.start_ns if ts else 0) + 5 * MS
        trace_meta = sim_meta(duration_ns=duration, stacks=self.stacks.stacks, **meta)
        return write_trace(path, self.events.table(), trace_meta)

    def _ready(self, task: Task) -> bool:
        return task.next_op is not None and task.waiting is None and task.after is None

    def _advance(self, task: Task, cost: int) -> None:
        """Move ``task`` past frame changes and delays to its next event."""
        task.at += cost
        for op in task.ops:
            if isinstance(op, Push):
                task.frames.append(op.func)
                task.at += self.jitter(40, 400)
            elif isinstance(op, Pop):
                task.frames.pop()
                task.at += self.jitter(20, 200)
            elif isinstance(op, Delay):
                task.at += self.jitter(op.lo, op.hi)
            else:
                task.next_op = op
                return
        task.next_op = None  # finished
        for other in self.tasks:
            if other.after is task:
                other.at += task.at
                other.after = None

    def _step(self, task: Task) -> None:
        op = task.next_op
        if isinstance(op, _Grant):
            self._emit(task, op.event, op.api, op.mutex, op.stack_id)
            task.next_op = None
            self._advance(task, self.jitter(60, 400))
            return
        assert isinstance(op, Lock | TryLock | Unlock)
        m = op.mutex
        sid = self._stack_id(task.frames, op.api)
        self._emit(task, "released" if isinstance(op, Unlock) else "attempt", op.api, m, sid)
        task.next_op = None
        if isinstance(op, Unlock):
            self._release(task, m)
            self._advance(task, self.jitter(60, 400))
        elif m.owner is None or (m.owner is task and m.reentrant and isinstance(op, Lock)):
            m.owner = task
            m.depth += 1
            task.next_op = _Grant(m, op.api, "acquired", sid)
            task.at += self.jitter(30, 150)
        elif isinstance(op, TryLock):
            task.next_op = _Grant(m, op.api, "failed", sid)
            task.at += self.jitter(30, 150)
        else:
            task.waiting = m
            task.next_op = _Grant(m, op.api, "acquired", sid)
            m.waiters.append(task)

    def _release(self, task: Task, m: Mutex) -> None:
        if m.owner is not task:
            raise RuntimeError(f"{task.comm}/{task.tid} released {m.name} it does not hold")
        m.depth -= 1
        if m.depth:
            return
        m.owner = None
        if m.waiters:
            # Mutex hand-off: the first waiter owns it when it wakes.
            waiter = m.waiters.popleft()
            m.owner, m.depth = waiter, 1
            waiter.waiting = None
            waiter.at = self.now + self.jitter(2 * US, 25 * US)
            if self.rng.random() < 0.3:
                waiter.cpu = int(self.rng.integers(self.cpus))

    def _stack_id(self, frames: list[str], api: str) -> int:
        key = (tuple(frames), api)
        sid = self._stack_ids.get(key)
        if sid is None:
            callees = [*frames[1:], api] if frames else []
            stack = [frame(api, "")] + [
                frame(f, c) for f, c in zip(reversed(frames), reversed(callees), strict=True)
            ]
            sid = self._stack_ids[key] = self.stacks.intern(stack)
        return sid

    def _emit(self, task: Task, event: str, api: str, m: Mutex, sid: int) -> None:
        caller = frame(task.frames[-1], api) if task.frames else frame(api, "")
        self.events.add(
            seq=len(self.events),
            ts_ns=self.now,
            cpu=task.cpu,
            pid=task.pid,
            tid=task.tid,
            comm=task.comm,
            event=event,
            api=api,
            lock_addr=m.addr,
            lock_class=m.lock_class,
            lock_name=m.name,
            caller=caller,
            stack_id=sid,
        )
