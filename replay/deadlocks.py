"""Deadlocks that happened: tasks still waiting, at the end, for each other's locks.

A task waiting for a lock it holds itself is one too, a cycle of one.
"""

from __future__ import annotations

import numpy as np

from lktrace.replay.findings import BlockedTask, Deadlock
from lktrace.replay.state import ReplayState

#: (hold, attempt): a lock a deadlocked task held and the attempt another made on it.
Link = tuple[int, int]


def find_deadlocks(state: ReplayState) -> tuple[list[Deadlock], list[Link]]:
    """Cycles of waiting tasks; also, per blocked task of a cycle, (its hold, the attempt on it).

    A pending attempt waits on the task holding the latest open hold of that
    lock in the same file; following "waits on" from each task finds the cycles.
    """
    h, ev = state.holds, state.events
    open_holds = np.flatnonzero(~h.released)
    holder = {  # the latest open hold of each lock
        (int(state.task_file[h.task[i]]), int(h.inst[i])): int(i)
        for i in open_holds[np.argsort(h.acquired_ts[open_holds], kind="stable")]
    }
    waiting = {int(ev.task[p]): int(p) for p in state.replay.pending}

    def taken_at(hold: int) -> tuple[int, int]:
        return int(h.acquired_ts[hold]), hold

    waits_on: dict[int, int] = {}
    for task, pos in waiting.items():
        hold = holder.get((int(ev.file[pos]), int(ev.inst[pos])))
        if hold is not None:  # its own hold too: a task that waits for itself
            waits_on[task] = int(h.task[hold])
    found: list[Deadlock] = []
    links: list[Link] = []
    seen: set[int] = set()
    for start in waits_on:
        path: list[int] = []
        t = start
        while t in waits_on and t not in seen and t not in path:
            path.append(t)
            t = waits_on[t]
        seen.update(path)
        if t not in path:
            continue
        cycle = path[path.index(t) :]
        tasks = []
        for i, task in enumerate(cycle):
            pos = waiting[task]
            # what it holds, in the order it took them
            mine = sorted((int(x) for x in open_holds if h.task[x] == task), key=taken_at)
            tid, comm = state.task(task)
            tasks.append(
                BlockedTask(
                    tid=tid,
                    comm=comm,
                    file=state.file_name(pos),
                    waits_for=state.attempt_ref(pos),
                    holds=[state.lock_ref(x) for x in mine],
                    waits_on_tid=state.task(cycle[(i + 1) % len(cycle)])[0],
                )
            )
            # the lock this task holds that the previous task in the cycle waits for
            prev = waiting[cycle[i - 1]]
            held = holder[(int(ev.file[prev]), int(ev.inst[prev]))]
            links.append((int(held), pos))
        found.append(Deadlock(tasks))
    return found, links
