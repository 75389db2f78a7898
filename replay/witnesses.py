"""The witnesses of many ordering pairs at once, as arrays: ``[i]`` is one :class:`Witness`.

A finder reports a handful of witnesses; ``lktrace diff`` may list a million
orderings, each with its first witness.  :func:`witnesses` gathers what they
need from a replay state into a few integer columns and keeps only the
vocabularies besides them, so the state can go; a :class:`Witness` is built
only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lktrace.replay.findings import Witness

if TYPE_CHECKING:
    from lktrace.replay.state import ReplayState


class Witnesses:
    """Per ordering pair: the event columns of its witness, and the vocabularies they index."""

    def __init__(self, state: ReplayState, level: str, p: np.ndarray) -> None:
        ev, h = state.events, state.holds
        hold, pos = state.pairs.hold[p], state.pairs.attempt[p]
        origin = h.origin[hold]
        at = np.maximum(origin, 0)
        src, dst = state.edge_nodes(level, p)
        self.cols = {  # in the order take() unpacks them
            "src": src,
            "dst": dst,
            "src_class": h.cls[hold],
            "dst_class": ev.cls[pos],
            "src_name": ev.inst_name[h.inst[hold]],
            "dst_name": ev.name[pos],
            "task": ev.task[pos],
            "ts": ev.ts[pos],
            "file": ev.file[pos],
            "caller": ev.caller[pos],
            "stack": ev.stack[pos],
            "held": origin >= 0,  # where the held lock was taken is known: the held_* columns
            "held_caller": ev.caller[at],
            "held_stack": ev.stack[at],
            "held_file": ev.file[at],
        }
        self.labels = state.graphs[level].labels
        self.classes, self.names, self.callers = ev.classes, ev.names, ev.callers
        self.traces = ev.traces  # metadata only: the file names and stack tables
        self.tids, self.comms = state.task_tids, state.task_comms

    def __len__(self) -> int:
        return len(self.cols["ts"])

    def __getitem__(self, i: int) -> Witness:
        return self.take(np.array([range(len(self))[i]]))[0]

    def take(self, rows: np.ndarray) -> list[Witness]:
        """The witnesses at ``rows``."""
        labels, classes, names, callers = self.labels, self.classes, self.names, self.callers
        traces, tids, comms = self.traces, self.tids, self.comms
        out = []
        for src, dst, sc, dc, sn, dn, task, ts, f, caller, stack, held, hc, hs, hf in zip(
            *(col[rows].tolist() for col in self.cols.values()), strict=True
        ):
            out.append(
                Witness(
                    src=labels[src],
                    dst=labels[dst],
                    src_class=classes[sc],
                    dst_class=classes[dc],
                    src_name=names[sn],
                    dst_name=names[dn],
                    tid=tids[task],
                    comm=comms[task],
                    ts_ns=ts,
                    caller=callers[caller],
                    held_caller=callers[hc] if held else "",
                    stack=traces[f].stack(stack),
                    held_stack=traces[hf].stack(hs) if held else [],
                    file=str(traces[f].path),
                )
            )
        return out

    def on_classes(self, classes: set[str]) -> np.ndarray:
        """Whether each witness has a lock of one of ``classes`` (all when none are given)."""
        if not classes:
            return np.ones(len(self), bool)
        wanted = [i for i, c in enumerate(self.classes) if c in classes]
        return np.isin(self.cols["src_class"], wanted) | np.isin(self.cols["dst_class"], wanted)
