"""What ``lktrace diff`` reports, as plain data with a stable JSON form.

The JSON document (``lktrace diff --format json``) has the top-level keys
``verdict``, ``old``, ``new``, ``summary``, ``notes``, ``edges_added``,
``edges_removed``, ``paths_added``, ``paths_removed``, ``not_exercised``,
``new_coverage``, ``inversions_fixed``, ``inversions_introduced``,
``inversions_remaining``, ``inversions_not_exercised``, ``depth_changes`` and
``timing``;
docs/drafts/diff.md documents each field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from lktrace.jsontext import dumps
from lktrace.replay.findings import Witness
from lktrace.replay.paths import CallPath


@dataclass
class OrderingChange:
    """An ordering (``src -> dst`` while the call path ``path`` held ``src``) on one side only."""

    level: str  # "class" or "instance"
    src: str
    dst: str
    path: CallPath
    count: int  # occurrences on the side that has it
    edge_in_both: bool  # the edge itself, on another path, is in both traces
    exercised: bool  # the other trace took ``src`` on ``path``
    witness: Witness  # from the side that has it

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "from": self.src,
            "to": self.dst,
            "path": list(self.path),
            "count": self.count,
            "edge_in_both": self.edge_in_both,
            "exercised": self.exercised,
            "witness": self.witness.to_dict(),
        }


#: How an ordering, or a cycle's edge, fares on the other side: in both; gone from
#: the new trace though its call path ran there; gone, path never run; new.
STATUSES = ("kept", "removed", "not_exercised", "added")


@dataclass
class PathStatus:
    """One call path of a cycle's edge and how it fares."""

    path: CallPath
    status: str  # one of STATUSES


@dataclass
class CycleEdge:
    """One edge of a compared cycle: its status, its call paths, one witness."""

    src: str
    dst: str
    status: str  # one of STATUSES, for the edge whatever the path
    paths: list[PathStatus]
    witness: Witness  # from the new trace when it has the edge

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "status": self.status,
            "paths": [{"path": list(p.path), "status": p.status} for p in self.paths],
            "witness": self.witness.to_dict(),
        }


@dataclass
class CycleChange:
    """An inversion (a cycle of lock names) fixed, introduced, remaining or not exercised."""

    level: str
    cycle: list[str]
    edges: list[CycleEdge]
    deadlocked_old: bool  # it deadlocked in the old trace
    deadlocked_new: bool
    # fixed: an edge gone from the new trace had a call path run there; introduced:
    # every new edge had a call path run in the old trace (else the old run may have missed it)
    exercised: bool
    gate: str | None = None  # fixed because the new trace always took it under this lock

    def to_dict(self) -> dict[str, Any]:
        d = {
            "level": self.level,
            "cycle": self.cycle,
            "deadlocked_old": self.deadlocked_old,
            "deadlocked_new": self.deadlocked_new,
            "exercised": self.exercised,
            "edges": [e.to_dict() for e in self.edges],
        }
        if self.gate is not None:
            d["gate"] = self.gate
        return d


#: Nesting kinds, mildest first: "unseen" (the path never took the lock in that
#: trace), "none" (it did, never nested), then the anomaly kinds of ``analyze``.
NESTING_KINDS = ("unseen", "none", "reentrant", "depth_exceeded", "self_deadlock")
NESTING_ERRORS = frozenset(("depth_exceeded", "self_deadlock"))


@dataclass
class Nesting:
    """How deep one call path nested a lock in one trace, with an example."""

    kind: str  # one of NESTING_KINDS
    depth: int  # the nested depth reached or (self_deadlock) waited for
    tid: int = 0
    comm: str = ""
    ts_ns: int = 0
    stack: list[str] = field(default_factory=list)


@dataclass
class DepthChange:
    """A lock whose nesting on one call path differs between the traces."""

    lock_class: str
    lock_name: str
    path: CallPath
    old: Nesting
    new: Nesting
    change: str  # "better", "worse", "changed" or "not_exercised" (new is "unseen")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = list(self.path)
        return d


@dataclass
class Timing:
    """Wait and hold time quantiles of one lock class in both traces (ns; hold may be None)."""

    lock_class: str
    old: dict[str, int | None]
    new: dict[str, int | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The sections of a :class:`Diff` that list changes, in JSON order.
SECTIONS = (
    "edges_added",
    "edges_removed",
    "paths_added",
    "paths_removed",
    "not_exercised",
    "new_coverage",
    "inversions_fixed",
    "inversions_introduced",
    "inversions_remaining",
    "inversions_not_exercised",
    "depth_changes",
)


@dataclass
class Diff:
    """Everything ``diff`` found between an old and a new trace."""

    verdict: str  # "better", "worse" or "same"
    old: list[dict[str, Any]]  # trace metadata, as ``analyze`` reports it
    new: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    edges_added: Sequence[OrderingChange] = field(default_factory=list)
    edges_removed: Sequence[OrderingChange] = field(default_factory=list)
    paths_added: Sequence[OrderingChange] = field(default_factory=list)
    paths_removed: Sequence[OrderingChange] = field(default_factory=list)
    not_exercised: Sequence[OrderingChange] = field(default_factory=list)
    new_coverage: Sequence[OrderingChange] = field(default_factory=list)
    inversions_fixed: list[CycleChange] = field(default_factory=list)
    inversions_introduced: list[CycleChange] = field(default_factory=list)
    inversions_remaining: list[CycleChange] = field(default_factory=list)
    inversions_not_exercised: list[CycleChange] = field(default_factory=list)
    depth_changes: list[DepthChange] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        """How many entries each section holds."""
        return {name: len(getattr(self, name)) for name in SECTIONS}

    def _document(self) -> dict[str, Any]:
        """The JSON document's keys in order, the listings not yet converted."""
        return {
            "verdict": self.verdict,
            "old": self.old[0] if len(self.old) == 1 else self.old,
            "new": self.new[0] if len(self.new) == 1 else self.new,
            "summary": self.summary,
            "notes": self.notes,
            **{name: getattr(self, name) for name in SECTIONS},
            "timing": self.timing,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            k: [x.to_dict() for x in v] if k in LISTINGS else v for k, v in self._document().items()
        }

    def write_json(self, out: TextIO, **head: Any) -> None:
        """Write ``{**head, **to_dict()}`` as ``json.dumps(..., indent=2)`` does
        (:func:`~lktrace.jsontext.dumps`), one entry of a listing at a time: a million
        orderings are never one string."""
        doc = {**head, **self._document()}
        for i, (key, value) in enumerate(doc.items()):
            out.write(("," if i else "{") + "\n  " + dumps(key) + ": ")
            if key not in LISTINGS:
                out.write(dumps(value, "  "))
                continue
            for j, entry in enumerate(value):
                out.write(("," if j else "[") + "\n    " + dumps(entry.to_dict(), "    "))
            out.write("\n  ]" if value else "[]")
        out.write("\n}\n")


#: The keys of the JSON document that list entries (written one by one).
LISTINGS = frozenset((*SECTIONS, "timing"))
