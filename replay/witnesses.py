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
        self.src, self.dst = state.edge_nodes(level, p)
        self.src_class, self.dst_class = h.cls[hold], ev.cls[pos]
        self.src_name, self.dst_name = ev.inst_name[h.inst[hold]], ev.name[pos]
        self.task, self.ts, self.pos_file = ev.task[pos], ev.ts[pos], ev.file[pos]
        self.caller, self.stack = ev.caller[pos], ev.stack[pos]
        self.held = origin >= 0  # where the held lock was taken is known
        self.held_caller, self.held_stack, self.held_file = ev.caller[at], ev.stack[at], ev.file[at]
        self.labels = state.graphs[level].labels
        self.classes, self.names, self.callers = ev.classes, ev.names, ev.callers
        self.traces = ev.traces  # metadata only: the file names and stack tables
        self.tids, self.comms = state.task_tids, state.task_comms

    def __len__(self) -> int:
        return len(self.ts)

    def __getitem__(self, i: int) -> Witness:
        traces, task, f = self.traces, int(self.task[i]), int(self.pos_file[i])
        held = bool(self.held[i])
        return Witness(
            src=self.labels[self.src[i]],
            dst=self.labels[self.dst[i]],
            src_class=self.classes[self.src_class[i]],
            dst_class=self.classes[self.dst_class[i]],
            src_name=self.names[self.src_name[i]],
            dst_name=self.names[self.dst_name[i]],
            tid=self.tids[task],
            comm=self.comms[task],
            ts_ns=int(self.ts[i]),
            caller=self.callers[self.caller[i]],
            held_caller=self.callers[self.held_caller[i]] if held else "",
            stack=traces[f].stack(int(self.stack[i])),
            held_stack=traces[self.held_file[i]].stack(int(self.held_stack[i])) if held else [],
            file=str(traces[f].path),
        )

    def on_classes(self, classes: set[str]) -> np.ndarray:
        """Whether each witness has a lock of one of ``classes`` (all when none are given)."""
        if not classes:
            return np.ones(len(self), bool)
        wanted = [i for i, c in enumerate(self.classes) if c in classes]
        return np.isin(self.src_class, wanted) | np.isin(self.dst_class, wanted)
