"""The wait-for graph of stuck tasks: who waits for whom, deadlocks and long waits.

A task is stuck when its blocking attempt on a lock has been pending for a while; it
waits for each task holding that lock. Among stuck tasks, a cycle of such waits (a
strongly connected component, or a task waiting for a lock it holds itself) is a
deadlock: nobody in it can go on. A stuck task outside any cycle waits behind a holder
that is itself not waiting for a lock (it sleeps on something else, or works slowly),
or whose holder is unknown: a long wait, worth reporting only past a larger threshold.
Pure functions of their inputs, so they are tested without a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lktrace.replay.cycles import strongly_connected


@dataclass(frozen=True)
class Wait:
    """A task blocked in a lock function since ``since_ns`` (CLOCK_MONOTONIC)."""

    tid: int
    comm: str
    lock: int
    lock_class: str
    lock_name: str
    since_ns: int
    caller: str

    @property
    def key(self) -> tuple[int, int, int]:
        return self.tid, self.lock, self.since_ns

    def label(self) -> str:
        return f"{self.comm}/{self.tid}"

    def lock_label(self) -> str:
        if self.lock_name and self.lock_name != self.lock_class:
            return f"{self.lock_class} {self.lock_name}"
        return self.lock_class


@dataclass(frozen=True)
class Holder:
    """A task holding a lock: from the ring (with its comm and acquisition), from the
    BPF held map (``in_map``), or both; ``since_ns`` is None when the ring has no row."""

    tid: int
    comm: str = ""
    since_ns: int | None = None
    caller: str = ""
    in_map: bool = False

    def label(self) -> str:
        return f"{self.comm}/{self.tid}" if self.comm else f"tid {self.tid}"

    def to_json(self) -> dict:
        return {"tid": self.tid, "comm": self.comm, "since_ns": self.since_ns,
                "caller": self.caller, "held_map": self.in_map}  # fmt: skip


@dataclass
class Finding:
    """A deadlock (``waits`` in cycle order: each waits for a lock the next one holds)
    or a long wait (``waits``: the tasks stuck behind one holder that is not waiting).
    ``behind``: other stuck tasks whose waits lead into a deadlock's cycle."""

    kind: str
    waits: list[Wait]
    holders: dict[int, list[Holder]]
    behind: list[Wait] = field(default_factory=list)

    @property
    def key(self) -> frozenset[tuple[int, int, int]]:
        """The same tasks stuck on the same attempts: the same finding."""
        return frozenset(w.key for w in self.waits)

    def held_by(self, w: Wait, most: int = 3) -> str:
        names = [h.label() for h in self.holders.get(w.lock, [])]
        if not names:
            return "unknown (not seen taken, not in the held map)"
        more = f" and {len(names) - most} more" if len(names) > most else ""
        return ", ".join(names[:most]) + more

    def line(self, now_ns: int, most: int = 4) -> str:
        """One line: what is stuck on what, for how long (the first ``most`` tasks)."""
        parts = [
            f"{w.label()} waits {(now_ns - w.since_ns) / 1e9:.1f} s for {w.lock_label()} "
            f"held by {self.held_by(w)}"
            for w in self.waits[:most]
        ]
        if len(self.waits) > most:
            parts.append(f"and {len(self.waits) - most} more tasks")
        return f"{self.kind}: {'; '.join(parts)}"

    def to_json(self, now_ns: int) -> list[dict]:
        """What was stuck and for how long, for the dump's metadata."""
        rows = []
        for role, waits in (("cycle" if self.kind == "deadlock" else "waiting", self.waits),
                            ("behind", self.behind)):  # fmt: skip
            for w in waits:
                rows.append(
                    {
                        "role": role,
                        "tid": w.tid,
                        "comm": w.comm,
                        "lock_class": w.lock_class,
                        "lock_name": w.lock_name,
                        "lock_addr": f"0x{w.lock:x}",
                        "caller": w.caller,
                        "since_ns": w.since_ns,
                        "waiting_s": round((now_ns - w.since_ns) / 1e9, 3),
                        "held_by": [h.to_json() for h in self.holders.get(w.lock, [])],
                    }
                )
        return rows


def _cycle_order(comp: set[int], edges: Mapping[int, list[int]], first: int) -> list[int]:
    """The members of a component in wait order from ``first`` (a simple cycle for
    mutexes, which have one holder each; any others follow)."""
    members, order, t = comp, [], first
    while t not in order:
        order.append(t)
        t = next((s for s in edges.get(t, []) if s in members), first)
    return order + sorted(members - set(order))


def find(
    stuck: Sequence[Wait], holders: Mapping[int, list[Holder]], now_ns: int, hard_ns: int
) -> list[Finding]:
    """Deadlocks among ``stuck``, and long waits (stuck for ``hard_ns`` or more) behind a
    holder that is not waiting; ``holders`` maps a lock address to its holders."""
    by_tid = {w.tid: w for w in stuck}
    edges = {w.tid: [h.tid for h in holders.get(w.lock, []) if h.tid in by_tid] for w in stuck}
    nodes = sorted(by_tid, key=lambda t: (by_tid[t].since_ns, t))
    found: list[Finding] = []
    deadlocked: set[int] = set()
    for comp in strongly_connected({t: edges[t] for t in nodes}):
        if len(comp) == 1 and not comp & set(edges[next(iter(comp))]):
            continue
        first = min(comp, key=lambda t: (by_tid[t].since_ns, t))
        waits = [by_tid[t] for t in _cycle_order(comp, edges, first)]
        found.append(Finding("deadlock", waits, _subset(holders, waits)))
        deadlocked.update(comp)
    # a stuck task whose waits lead into a cycle is stuck behind that deadlock
    for d in found:
        cycle = {w.tid for w in d.waits}
        behind = _reaching(nodes, edges, cycle)
        d.behind = [by_tid[t] for t in nodes if t in behind]
        d.holders = _subset(holders, d.waits + d.behind)
        deadlocked |= behind
    # the rest wait behind a holder that is not waiting, grouped by that holder's lock
    roots: dict[int, set[int]] = {}  # the last stuck task of a chain -> the chain's tasks
    for t in nodes:
        if t in deadlocked or now_ns - by_tid[t].since_ns < hard_ns:
            continue
        chain = [t]
        while (nxt := next((s for s in edges[chain[-1]] if s not in chain), None)) is not None:
            chain.append(nxt)
        roots.setdefault(chain[-1], set()).update(chain)
    for members in roots.values():
        waits = [by_tid[t] for t in nodes if t in members]
        found.append(Finding("long-wait", waits, _subset(holders, waits)))
    return found


def _reaching(nodes: Sequence[int], edges: Mapping[int, list[int]], target: set[int]) -> set[int]:
    """Nodes outside ``target`` from which some path of waits reaches it."""
    reach: set[int] = set()
    changed = True
    while changed:
        changed = False
        for t in nodes:
            if t in target or t in reach:
                continue
            if any(s in target or s in reach for s in edges.get(t, [])):
                reach.add(t)
                changed = True
    return reach


def _subset(holders: Mapping[int, list[Holder]], waits: Sequence[Wait]) -> dict[int, list[Holder]]:
    return {w.lock: list(holders.get(w.lock, [])) for w in waits}
