"""Load traces into flat numpy arrays in replay order: task by task, in time.

Every later step of the replay works on these arrays by position, so they
are sorted once here by ``(task, ts_ns, seq)``.  Strings become small integer
codes: lock classes, tasks (file, tid) and lock instances.

A lock instance is its name when it has one (``pci:0000:01:00.0``,
``pci_rescan_remove_lock``): names identify the same lock across boots and
tell apart two devices that reused one address.  An anonymous lock (its name
is its hex address) is the address within its file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.trace import EVENTS, Trace

ATTEMPT, ACQUIRED, FAILED, RELEASED = range(len(EVENTS))


def dictionary_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """The indices (int32) and the values of a dictionary column, one dictionary for all chunks."""
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    if col.num_chunks == 0:
        return np.zeros(0, np.int32), []
    values = col.chunk(0).dictionary.to_pylist()
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks])
    return codes.astype(np.int32, copy=False), values


def _translate(col: pa.ChunkedArray, vocabulary: dict[str, int]) -> np.ndarray:
    """Codes of ``col`` in a vocabulary shared by several files (grown as needed)."""
    codes, values = dictionary_codes(col)
    lookup = np.array([vocabulary.setdefault(v, len(vocabulary)) for v in values], np.int32)
    return lookup[codes] if len(lookup) else codes


@dataclass
class Events:
    """All events being replayed, as parallel arrays sorted by (task, ts_ns, seq)."""

    traces: list[Trace]
    file: np.ndarray  # int16: index into traces
    task: np.ndarray  # int32: index into tasks
    ts: np.ndarray  # int64
    event: np.ndarray  # int8: ATTEMPT, ACQUIRED, FAILED or RELEASED
    blocking: np.ndarray  # bool: an attempt that can wait (not a trylock)
    inst: np.ndarray  # int32: index into instances
    cls: np.ndarray  # int32: index into classes, as this event named it
    name: np.ndarray  # int32: index into names
    caller: np.ndarray  # int32: index into callers
    stack: np.ndarray  # int32: stack id in its file, -1 when not recorded
    classes: list[str]
    names: list[str]
    callers: list[str]
    tasks: pd.DataFrame  # per task: file, tid, pid, comm
    inst_name: np.ndarray  # int32 per instance: index into names

    def __len__(self) -> int:
        return len(self.ts)

    def stack_frames(self, i: int) -> list[str]:
        """The call stack recorded with event ``i``."""
        return self.traces[self.file[i]].stack(int(self.stack[i]) if self.stack[i] >= 0 else None)

    def task_label(self, task: int) -> str:
        row = self.tasks.iloc[task]
        return f"{row.comm}/{row.tid}"


def load_events(traces: Sequence[Trace]) -> Events:
    """Concatenate ``traces`` into one :class:`Events`, sorted for replay."""
    vocab: dict[str, dict[str, int]] = {"cls": {}, "name": {}, "caller": {}, "event": {}, "api": {}}
    for e in EVENTS:
        vocab["event"][e] = len(vocab["event"])
    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "file",
            "tid",
            "pid",
            "ts",
            "seq",
            "event",
            "api",
            "cls",
            "name",
            "caller",
            "stack",
            "addr",
            "comm",
        )
    }
    comms: dict[str, int] = {}
    for i, trace in enumerate(traces):
        t = trace.table
        parts["file"].append(np.full(t.num_rows, i, np.int16))
        for col, key in (("tid", "tid"), ("pid", "pid"), ("ts_ns", "ts"), ("seq", "seq")):
            parts[key].append(t[col].to_numpy())
        parts["addr"].append(t["lock_addr"].to_numpy())
        parts["stack"].append(pc.fill_null(t["stack_id"], -1).to_numpy())
        for col, key in (
            ("event", "event"),
            ("api", "api"),
            ("lock_class", "cls"),
            ("lock_name", "name"),
            ("caller", "caller"),
        ):
            parts[key].append(_translate(t[col], vocab[key]))
        parts["comm"].append(_translate(t["comm"], comms))
    a = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}

    apis = list(vocab["api"])
    trylock = np.array(["trylock" in api for api in apis], bool)
    names = list(vocab["name"])
    anonymous = np.array([n.startswith("0x") for n in names], bool)

    task_key = (a["file"].astype(np.int64) << 32) | a["tid"].astype(np.uint32)
    task, task_uniques = pd.factorize(task_key)
    named = ~anonymous[a["name"]] if len(names) else np.zeros(0, bool)
    inst_key = np.where(named, a["name"].astype(np.int64), -1)
    inst = (
        pd.DataFrame(
            {"k": inst_key, "f": np.where(named, 0, a["file"]), "a": np.where(named, 0, a["addr"])}
        )
        .groupby(["k", "f", "a"], sort=False)
        .ngroup()
        .to_numpy(np.int32)
    )

    order = np.lexsort((a["seq"], a["ts"], task))
    ev = a["event"][order].astype(np.int8)
    task = task[order].astype(np.int32)
    inst = inst[order]
    name = a["name"][order]

    inst_name = np.zeros(inst.max() + 1 if len(inst) else 0, np.int32)
    inst_name[inst] = name
    comm_values = np.array(list(comms), dtype=object)
    last_of_task = np.flatnonzero(np.r_[task[1:] != task[:-1], True]) if len(task) else []
    tasks = pd.DataFrame(
        {
            "file": (task_uniques >> 32).astype(np.int16),
            "tid": (task_uniques & 0xFFFFFFFF).astype(np.int64).astype(np.int32),
        }
    )
    tasks["pid"] = a["pid"][order][last_of_task]
    tasks["comm"] = comm_values[a["comm"][order][last_of_task]] if len(comm_values) else []
    return Events(
        traces=list(traces),
        file=a["file"][order],
        task=task,
        ts=a["ts"][order].astype(np.int64),
        event=ev,
        blocking=(ev == ATTEMPT) & ~trylock[a["api"][order]] if len(apis) else ev == ATTEMPT,
        inst=inst,
        cls=a["cls"][order],
        name=name,
        caller=a["caller"][order],
        stack=a["stack"][order].astype(np.int32),
        classes=list(vocab["cls"]),
        names=names,
        callers=list(vocab["caller"]),
        tasks=tasks,
        inst_name=inst_name,
    )
