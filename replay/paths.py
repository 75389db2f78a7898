"""Call paths: where in the kernel a lock was taken, comparable across builds.

A call path is the symbols of a stack without their offsets, from the call
site outward (``device_release_driver_internal``, ``pci_stop_bus_device``,
…), or the call site alone when no stack was recorded.  The same path on
another kernel build has the same symbols at other offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lktrace.replay.events import Events
from lktrace.trace import frame_symbol

#: A call path: symbols without offsets, from the call site outward.
CallPath = tuple[str, ...]


def call_path(caller: str, stack: Sequence[str]) -> CallPath:
    """The symbols of ``stack`` from the call site outward; the call site alone without one."""
    site = frame_symbol(caller)
    syms = [frame_symbol(f) for f in stack]
    if site in syms:
        return tuple(syms[syms.index(site) :])
    return tuple(syms) or ((site,) if site else ())


def symbols(frames: Sequence[str]) -> CallPath:
    """Stack frames without their offsets: the same path on another build."""
    return tuple(frame_symbol(f) for f in frames)


class CallPaths:
    """Call paths of events, interned: ``paths[id]`` is the path of that id."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.paths: list[CallPath] = []
        self._ids: dict[CallPath, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, pid: int) -> CallPath:
        return self.paths[pid]

    def intern(self, path: CallPath) -> int:
        pid = self._ids.get(path)
        if pid is None:
            pid = self._ids[path] = len(self.paths)
            self.paths.append(path)
        return pid

    def at(self, pos: np.ndarray) -> np.ndarray:
        """Call-path ids of the events at ``pos``; a -1 position gets the empty path.

        Symbolises each distinct (file, call site, stack) once.
        """
        ev = self.events
        out = np.full(len(pos), self.intern(()), np.int64)
        ok = np.flatnonzero(pos >= 0)
        p = pos[ok]
        where = pd.DataFrame({"f": ev.file[p], "c": ev.caller[p], "s": ev.stack[p]})
        codes = where.groupby(["f", "c", "s"], sort=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        ids = [
            self.intern(call_path(ev.callers[ev.caller[i]], ev.stack_frames(i)))
            for i in p[first].tolist()
        ]
        out[ok] = np.asarray(ids, np.int64)[codes] if ids else []
        return out
