"""What ``lktrace analyze`` reports, as plain data with a stable JSON form.

The JSON document (``--format json``) has the top-level keys ``trace``,
``summary``, ``notes``, ``deadlocks``, ``inversions``, ``guarded`` and
``anomalies``; the README documents each field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Anomaly kinds, most severe first; the first four make ``analyze`` exit 1.
ANOMALY_KINDS = (
    "self_deadlock",
    "depth_exceeded",
    "foreign_release",
    "unbalanced_release",
    "reentrant",
    "held_at_end",
    "held_before_start",
)
ERROR_KINDS = frozenset(ANOMALY_KINDS[:4])


@dataclass
class Witness:
    """One occurrence of an ordering edge: a task held ``src`` when it attempted ``dst``."""

    src: str  # node at the graph's level: a class, or an instance name
    dst: str
    src_class: str
    dst_class: str
    src_name: str
    dst_name: str
    tid: int
    comm: str
    ts_ns: int
    caller: str  # where dst was attempted
    held_caller: str  # where src was taken
    stack: list[str]  # where dst was attempted, innermost first
    held_stack: list[str]  # where src was taken
    file: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "comm": self.comm,
            "ts_ns": self.ts_ns,
            "caller": self.caller,
            "held_caller": self.held_caller,
            "stack": list(self.stack),
            "held_stack": list(self.held_stack),
            "file": self.file,
            "from": self.src,
            "to": self.dst,
            "from_class": self.src_class,
            "to_class": self.dst_class,
            "from_name": self.src_name,
            "to_name": self.dst_name,
        }


#: An ordering is clearly the exception when each step of the other direction
#: was seen at least this many times as often.
MINORITY = 10


@dataclass
class Suspect:
    """The ordering of a cycle that goes against the rest: the likely bug.

    ``src -> dst`` was seen ``count`` times; the trusted orderings take them
    the other way, along ``against`` (``dst ... src``, the shortest path) and
    any other path: ``against_count`` occurrences (a maximum flow along them).
    """

    src: str
    dst: str
    count: int
    against: list[str]
    against_count: int

    @property
    def clear(self) -> bool:
        """Whether this ordering is clearly the minority (else both are common)."""
        return self.against_count >= MINORITY * self.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "count": self.count,
            "against": {"path": self.against, "count": self.against_count},
            "clear": self.clear,
        }


@dataclass
class Inversion:
    """One contradiction between lock orders: a suspect ordering and the cycles it closes.

    Shown by its shortest cycle, ``cycle``, which starts where the suspect
    ordering leads, so the suspect closes it: ``cycle[-1] -> cycle[0]``.
    """

    level: str  # "class" or "instance"
    cycle: list[str]
    edges: list[Witness]  # one per edge of ``cycle``: cycle[i] -> cycle[i + 1]
    same_task: bool  # every occurrence of every edge came from one task
    same_instances: bool  # the witnesses close the cycle on the very same locks
    tasks: list[dict[str, Any]]  # every task that took one of the edges
    #: per edge, one witness per distinct call path (the first is ``edges[i]``)
    paths: list[list[Witness]] = field(default_factory=list)
    deadlocked: bool = False  # a deadlock in the trace closed this cycle
    gate: str | None = None  # a lock held on every occurrence of every edge
    counts: list[int] = field(default_factory=list)  # per edge of ``cycle``: times seen
    suspect: Suspect | None = None
    #: every elementary cycle through the suspect found (``cycle`` first), each
    #: starting where the suspect leads; ``cycles_cut``: --max-cycles stopped the count
    cycles: list[list[str]] = field(default_factory=list)
    cycles_cut: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["edges"] = [w.to_dict() for w in self.edges]
        d["paths"] = [[w.to_dict() for w in ws] for ws in self.paths]
        d["suspect"] = self.suspect.to_dict() if self.suspect else None
        if self.gate is None:
            del d["gate"]
        return d


@dataclass
class LockRef:
    """A lock a task holds or waits for, since when, and where it asked for it."""

    lock_class: str
    lock_name: str
    since_ns: int
    caller: str
    stack: list[str]


@dataclass
class BlockedTask:
    """A task still waiting for a lock when the trace ended."""

    tid: int
    comm: str
    file: str
    waits_for: LockRef
    holds: list[LockRef]
    waits_on_tid: int  # the task holding what it waits for


@dataclass
class Deadlock:
    """A cycle of tasks each waiting for a lock the next one holds: it happened."""

    tasks: list[BlockedTask]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Anomaly:
    """A reentrancy or balance problem of one task on one lock."""

    kind: str
    lock_class: str
    lock_name: str
    tid: int
    comm: str
    ts_ns: int
    depth: int
    stack: list[str]
    file: str
    detail: str  # one line for people

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Analysis:
    """Everything ``analyze`` found in one or more traces."""

    traces: list[dict[str, Any]]
    summary: dict[str, int]
    notes: list[str] = field(default_factory=list)
    deadlocks: list[Deadlock] = field(default_factory=list)
    inversions: list[Inversion] = field(default_factory=list)
    guarded: list[Inversion] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Findings that should fail a CI job: deadlocks, inversions, error anomalies."""
        errors = sum(a.kind in ERROR_KINDS for a in self.anomalies)
        return len(self.deadlocks) + len(self.inversions) + errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.traces[0] if len(self.traces) == 1 else {"files": self.traces},
            "summary": self.summary,
            "notes": self.notes,
            "deadlocks": [d.to_dict() for d in self.deadlocks],
            "inversions": [i.to_dict() for i in self.inversions],
            "guarded": [i.to_dict() for i in self.guarded],
            "anomalies": [a.to_dict() for a in self.anomalies],
        }
