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

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.replay.arrays import sort_rows, stable_argsort
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


class Vocabulary(dict):
    """Codes for strings shared by several files, grown as files are read."""

    def translate(self, col: pa.ChunkedArray) -> np.ndarray:
        """The codes of a dictionary column's values in this vocabulary."""
        codes, values = dictionary_codes(col)
        lookup = np.array([self.setdefault(v, len(self)) for v in values], np.int32)
        return lookup[codes] if len(lookup) else codes


def _replay_order(task: np.ndarray, ts: np.ndarray, seq: np.ndarray, n_task: int) -> np.ndarray:
    """Positions in (task, ts, seq) order: one stable sort when rows already come in time order."""
    later = ts[1:] > ts[:-1]
    later |= (ts[1:] == ts[:-1]) & (seq[1:] > seq[:-1])
    if later.all():
        return stable_argsort(task, n_task)
    return sort_rows(task, ts, seq)


def _permute(arrays: dict[str, np.ndarray], order: np.ndarray) -> None:
    """Reorder every array by ``order`` in place, two at a time on two threads.

    A gather releases the GIL, so two run at once; replacing the arrays two
    by two keeps the peak at two arrays above the data.
    """
    keys = list(arrays)
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(keys), 2):
            batch = keys[i : i + 2]
            done = pool.map(lambda k: arrays[k][order], batch)
            arrays.update(zip(batch, done, strict=True))


class _Columns:
    """Hands out a trace's columns one at a time.

    With ``drop``, each column leaves the table as it is taken and the trace
    keeps none, so the peak stays one column above the arrays being built.
    """

    def __init__(self, trace: Trace, drop: bool) -> None:
        self.table = trace.table
        self.rows = self.table.num_rows
        self.drop = drop
        if drop:
            trace.table = trace.table.slice(0, 0)

    def pop(self, name: str) -> pa.ChunkedArray:
        col = self.table[name]
        if self.drop:
            self.table = self.table.drop_columns([name])
            pa.default_memory_pool().release_unused()  # hand freed columns back
        return col


@dataclass
class Events:
    """All events being replayed, as parallel arrays sorted by (task, ts_ns, seq)."""

    traces: list[Trace]  # metadata only: their tables are dropped after loading
    spans: list[tuple[int, int, int]]  # per trace: events, first and last ts_ns
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

    @property
    def n_inst(self) -> int:
        return len(self.inst_name)

    @property
    def n_task(self) -> int:
        return len(self.tasks)

    @property
    def n_file(self) -> int:
        return len(self.traces)

    def stack_frames(self, i: int) -> list[str]:
        """The call stack recorded with event ``i``."""
        return self.traces[self.file[i]].stack(int(self.stack[i]) if self.stack[i] >= 0 else None)


def load_events(traces: Iterable[Trace], drop_tables: bool = False) -> Events:
    """Concatenate ``traces`` into one :class:`Events`, sorted for replay.

    The returned ``traces`` keep only metadata.  With ``drop_tables`` each
    trace's own table is emptied once read, so that with a generator only one
    file's table is in memory at a time.
    """
    cls, names, callers, comms = Vocabulary(), Vocabulary(), Vocabulary(), Vocabulary()
    named_inst: dict[int, int] = {}  # name code -> instance
    kept: list[Trace] = []
    spans: list[tuple[int, int, int]] = []
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    tasks: list[pd.DataFrame] = []
    n_inst = n_task = 0
    for i, trace in enumerate(traces):
        kept.append(Trace(trace.path, trace.table.slice(0, 0), trace.meta))
        cols = _Columns(trace, drop_tables)
        n = cols.rows
        ts = cols.pop("ts_ns").to_numpy()
        spans.append((n, int(ts.min()) if n else 0, int(ts.max()) if n else 0))
        event_codes, event_values = dictionary_codes(cols.pop("event"))
        event = np.array([EVENTS.index(v) for v in event_values], np.int8)[event_codes]
        api_codes, api_values = dictionary_codes(cols.pop("api"))
        trylock = np.array(["trylock" in v for v in api_values], bool)
        parts["blocking"].append((event == ATTEMPT) & ~trylock[api_codes] if n else event == 0)
        parts["event"].append(event)
        del event_codes, api_codes

        name = names.translate(cols.pop("lock_name"))
        named = np.array([not v.startswith("0x") for v in names], bool)[name] if n else name == 0
        for code in np.unique(name[named]).tolist():
            if code not in named_inst:
                named_inst[code] = n_inst
                n_inst += 1
        inst = np.empty(n, np.int32)
        if named.any():
            lookup = np.zeros(max(named_inst) + 1, np.int32)
            lookup[list(named_inst)] = list(named_inst.values())
            inst[named] = lookup[name[named]]
        anon_codes, anon_addrs = pd.factorize(cols.pop("lock_addr").to_numpy()[~named])
        inst[~named] = anon_codes + n_inst
        n_inst += len(anon_addrs)
        del named, anon_codes

        tid_codes, tids = pd.factorize(cols.pop("tid").to_numpy())
        tasks.append(pd.DataFrame({"file": np.int16(i), "tid": tids.astype(np.int32)}))
        parts["task"].append((tid_codes + n_task).astype(np.int32))
        n_task += len(tids)
        del tid_codes

        parts["file"].append(np.full(n, i, np.int16))
        parts["ts"].append(ts)
        parts["seq"].append(cols.pop("seq").to_numpy())
        parts["inst"].append(inst)
        parts["name"].append(name)
        parts["cls"].append(cls.translate(cols.pop("lock_class")))
        parts["caller"].append(callers.translate(cols.pop("caller")))
        parts["comm"].append(comms.translate(cols.pop("comm")))
        parts["pid"].append(cols.pop("pid").to_numpy())
        parts["stack"].append(pc.fill_null(cols.pop("stack_id"), -1).to_numpy().astype(np.int32))
        del cols, ts, name, inst

    a = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
    del parts
    order = _replay_order(a["task"], a["ts"], a.pop("seq"), n_task)
    _permute(a, order)
    del order

    task = a["task"]
    last = np.flatnonzero(np.r_[task[1:] != task[:-1], True]) if len(task) else []
    table = pd.concat(tasks, ignore_index=True) if tasks else pd.DataFrame({"file": [], "tid": []})
    table["pid"] = a.pop("pid")[last]
    comm = a.pop("comm")[last]
    table["comm"] = np.array(list(comms), dtype=object)[comm] if len(comm) else []
    inst_name = np.zeros(n_inst, np.int32)
    inst_name[a["inst"]] = a["name"]
    return Events(
        traces=kept,
        spans=spans,
        classes=list(cls),
        names=list(names),
        callers=list(callers),
        tasks=table,
        inst_name=inst_name,
        **a,
    )


@dataclass
class Piece:
    """One time slice of one trace, plus the events carried over from the slices before.

    Carried events (open acquisitions, trailing attempts) rebuild each task's
    state; they pair with later events but are not counted again.  Arrays are
    sorted by (task, ts_ns, seq) like :class:`Events`.
    """

    task: np.ndarray  # int32: index into the coder's tasks
    ts: np.ndarray  # int64
    seq: np.ndarray  # uint64
    event: np.ndarray  # int8
    blocking: np.ndarray  # bool
    inst: np.ndarray  # int32
    cls: np.ndarray  # int32
    caller: np.ndarray  # int32
    stack: np.ndarray  # int32, -1 when not recorded
    carried: np.ndarray  # bool
    n_inst: int = 0
    n_task: int = 0
    n_file: int = 1

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def file(self) -> np.ndarray:
        return np.zeros(len(self), np.int16)

    def take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The events at ``positions``, as columns, marked carried."""
        cols = {k: getattr(self, k)[positions] for k in _PIECE_COLUMNS}
        cols["carried"] = np.ones(len(positions), bool)
        return cols


_PIECE_COLUMNS = ("task", "ts", "seq", "event", "blocking", "inst", "cls", "caller", "stack")


class Interner:
    """Numbers small non-negative integers (codes, tids) in order of first appearance."""

    #: Keys from here up (or below 0) are numbered through a dict instead of an array.
    BIG = 1 << 24

    def __init__(self) -> None:
        self.lookup = np.full(0, -1, np.int32)
        self.keys: list[int] = []  # per number, its key
        self._big: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def _number(self, key: int) -> int:
        if 0 <= key < len(self.lookup) and self.lookup[key] >= 0:
            return int(self.lookup[key])
        got = self._big.get(key)
        if got is None:
            got = len(self.keys)
            self.keys.append(key)
            if 0 <= key < self.BIG:
                self._grow(key + 1)
                self.lookup[key] = got
            else:
                self._big[key] = got
        return got

    def _grow(self, top: int) -> None:
        if top > len(self.lookup):
            self.lookup = np.r_[self.lookup, np.full(top - len(self.lookup), -1, np.int32)]

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """The number of each key, numbering new ones in order of first appearance."""
        if not len(keys):
            return np.zeros(0, np.int32)
        if keys.min() < 0 or keys.max() >= self.BIG:  # e.g. odd tids: hash them
            codes, uniq = pd.factorize(keys)
            return np.array([self._number(int(k)) for k in uniq], np.int32)[codes]
        top = int(keys.max()) + 1
        self._grow(top)
        ids = self.lookup[keys]
        new = np.flatnonzero(ids < 0)
        if len(new):
            first = np.full(top, len(keys), np.int64)
            np.minimum.at(first, keys[new], new)
            fresh = np.flatnonzero(first < len(keys))
            fresh = fresh[np.argsort(first[fresh], kind="stable")]
            self.lookup[fresh] = np.arange(len(self.keys), len(self.keys) + len(fresh))
            self.keys += fresh.tolist()
            ids = self.lookup[keys]
        return ids


class Coder:
    """Turns one trace's slices into :class:`Piece` arrays with codes that hold across slices.

    A lock instance is its name: a named lock's, or an anonymous one's
    address as the trace spells it, which is unique within one trace.
    """

    def __init__(self) -> None:
        self.classes, self.names, self.callers, self.comms = (Vocabulary() for _ in range(4))
        self._inst = Interner()  # name code -> instance
        self._tids = Interner()
        self.pids: list[int] = []  # per task: pid and comm code of its latest event
        self.task_comm: list[int] = []

    @property
    def inst_name(self) -> list[int]:
        """Per instance: its name code."""
        return self._inst.keys

    @property
    def tids(self) -> list[int]:
        return self._tids.keys

    @property
    def n_inst(self) -> int:
        return len(self._inst)

    @property
    def n_task(self) -> int:
        return len(self._tids)

    def encode(self, table: pa.Table, carry: dict[str, np.ndarray] | None) -> Piece:
        """The events of ``table`` (one slice, format v1 columns) after those of ``carry``."""
        n = table.num_rows
        event_codes, event_values = dictionary_codes(table["event"])
        event = np.array([EVENTS.index(v) for v in event_values], np.int8)[event_codes]
        api_codes, api_values = dictionary_codes(table["api"])
        trylock = np.array(["trylock" in v for v in api_values], bool)
        blocking = (event == ATTEMPT) & ~trylock[api_codes] if n else event == 0
        inst = self._inst.ids(self.names.translate(table["lock_name"]))
        task = self._tids.ids(table["tid"].to_numpy())
        cols = {
            "task": task,
            "ts": table["ts_ns"].to_numpy(),
            "seq": table["seq"].to_numpy(),
            "event": event,
            "blocking": blocking,
            "inst": inst,
            "cls": self.classes.translate(table["lock_class"]),
            "caller": self.callers.translate(table["caller"]),
            "stack": pc.fill_null(table["stack_id"], -1).to_numpy().astype(np.int32),
            "carried": np.zeros(n, bool),
        }
        comm = self.comms.translate(table["comm"])
        pid = table["pid"].to_numpy()
        if carry is not None:
            cols = {k: np.concatenate([carry[k], v]) for k, v in cols.items()}
        order = _replay_order(cols["task"], cols["ts"], cols["seq"], max(self.n_task, 1))
        _permute(cols, order)
        self._latest(cols["task"], pid, comm, cols["carried"], order)
        return Piece(**cols, n_inst=self.n_inst, n_task=self.n_task)

    def _latest(self, task, pid, comm, carried: np.ndarray, order: np.ndarray) -> None:
        """Keep each task's pid and comm as of its latest event (``pid`` and ``comm`` of the
        table's rows, which ``order`` placed after the carried ones, in replay order)."""
        grow = self.n_task - len(self.pids)
        self.pids += [0] * grow
        self.task_comm += [0] * grow
        real = np.flatnonzero(~carried)
        if not len(real):
            return
        t = task[real]
        last = real[np.flatnonzero(np.r_[t[1:] != t[:-1], True])]
        at = order[last] - (len(order) - len(pid))
        for tk, p, c in zip(task[last].tolist(), pid[at].tolist(), comm[at].tolist(), strict=True):
            self.pids[tk] = p
            self.task_comm[tk] = c
