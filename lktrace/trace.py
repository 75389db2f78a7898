"""Trace format v1: the one Parquet layout that ``record`` writes and every reader loads.

A trace is one Parquet file with one row per lock event and file key-value
metadata (``lktrace:*``) holding the stack table and the recording's context.
Rows need not be in time order; readers order by ``(ts_ns, seq)``.  String
columns are dictionary-encoded in memory and on disk, so a 10 M event trace
stays small; on disk they are plain Parquet UTF-8 columns that pandas, duckdb
and polars read as strings.

This module is the only place that knows the layout: the schema, validation
with one-line errors, metadata and the stack table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lktrace.version import writer_metadata

FORMAT_VERSION = 1
META_PREFIX = "lktrace:"

#: Values of the ``event`` column, in the order a lock sees them.
EVENTS = ("attempt", "acquired", "failed", "released")

_STR = pa.dictionary(pa.int32(), pa.string())

#: The columns of trace format v1, as held in memory and written to disk.
SCHEMA = pa.schema(
    [
        ("seq", pa.uint64()),
        ("ts_ns", pa.int64()),
        ("cpu", pa.int32()),
        ("pid", pa.int32()),
        ("tid", pa.int32()),
        ("comm", _STR),
        ("event", _STR),
        ("api", _STR),
        ("lock_addr", pa.uint64()),
        ("lock_class", _STR),
        ("lock_name", _STR),
        ("caller", _STR),
        ("stack_id", pa.int32()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
_NULLABLE = {"stack_id"}
# Columns whose integers are bit patterns, not quantities: a kernel address
# written as int64 by a pandas user is negative and must wrap, not fail.
_BIT_PATTERNS = {"seq", "lock_addr"}


_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?")


def frame_symbol(frame: str) -> str:
    """A stack frame without its offset (``remove_store+0x1c/0x90`` -> ``remove_store``).

    What stays the same for one call path across kernel builds.
    """
    return _OFFSET.sub("", frame).strip()


class TraceError(Exception):
    """A trace that cannot be read or written; ``str()`` is one line naming the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass
class TraceMeta:
    """The file-level metadata of a trace (``lktrace:<name>`` keys)."""

    kernel: str = ""
    kernel_version: str = ""
    host: str = ""
    started_at: str = ""
    duration_ns: int = 0
    probes: list[str] = field(default_factory=list)
    lost_events: int = 0
    command: str = ""
    stacks: list[list[str]] = field(default_factory=list)
    #: Other ``lktrace:*`` keys (e.g. ``backend``, ``missing_probes``), kept as text.
    extra: dict[str, str] = field(default_factory=dict)

    def to_kv(self) -> dict[str, str]:
        """Encode as Parquet key-value metadata, naming this lktrace as the writer.

        The writer is always the lktrace encoding it: a trace recovered from a
        spool, or rewritten, names the lktrace that wrote the file.
        """
        kv = {f"{META_PREFIX}format": str(FORMAT_VERSION)}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            kv[META_PREFIX + f.name] = json.dumps(value) if isinstance(value, list) else str(value)
        kv.update({META_PREFIX + k: v for k, v in self.extra.items()})
        kv.update(writer_metadata())
        return kv

    @classmethod
    def from_kv(cls, kv: Mapping[bytes, bytes] | None, path: str | Path) -> TraceMeta:
        """Decode Parquet key-value metadata; unknown non-lktrace keys are ignored."""
        raw = {
            k.decode(errors="replace")[len(META_PREFIX) :]: v.decode(errors="replace")
            for k, v in (kv or {}).items()
            if k.startswith(META_PREFIX.encode())
        }
        version = raw.pop("format", str(FORMAT_VERSION))
        if version != str(FORMAT_VERSION):
            raise TraceError(
                path, f"trace format version {version!r} is not supported (this lktrace reads 1)"
            )
        meta = cls()
        for f in fields(cls):
            if f.name == "extra" or f.name not in raw:
                continue
            text = raw.pop(f.name)
            try:
                if f.name in ("probes", "stacks"):
                    value: Any = json.loads(text)
                    if not isinstance(value, list):
                        raise ValueError("not a list")
                elif f.name in ("duration_ns", "lost_events"):
                    value = int(text)
                else:
                    value = text
            except ValueError as e:
                raise TraceError(path, f"metadata {META_PREFIX}{f.name} is malformed ({e})") from e
            setattr(meta, f.name, value)
        meta.extra = raw
        return meta


class StackTable:
    """Interns call stacks (innermost frame first) into the ids ``stack_id`` holds."""

    def __init__(self, stacks: Iterable[Sequence[str]] = ()) -> None:
        self._ids: dict[tuple[str, ...], int] = {}
        self.stacks: list[list[str]] = []
        for frames in stacks:
            self.intern(frames)

    def intern(self, frames: Sequence[str]) -> int:
        """Return the id of ``frames``, adding it if new."""
        key = tuple(frames)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self.stacks)
            self.stacks.append(list(key))
        return sid

    def __len__(self) -> int:
        return len(self.stacks)


def conform(table: pa.Table, path: str | Path = "<table>") -> pa.Table:
    """Check ``table`` against format v1 and cast it to :data:`SCHEMA`.

    Accepts what a plain pyarrow or pandas writer produces: any integer width,
    plain, large or dictionary strings, extra columns (dropped).
    """
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise TraceError(path, f"missing column{'s' * (len(missing) > 1)}: {', '.join(missing)}")
    columns = []
    for target in SCHEMA:
        col = table.column(target.name)
        columns.append(_cast_column(col, target, path))
    out = pa.Table.from_arrays(columns, schema=SCHEMA)
    # Check the dictionaries, not every row; only if one holds a stranger, see if it is used.
    known = {v for chunk in out["event"].chunks for v in chunk.dictionary.to_pylist()}
    if not known <= set(EVENTS):
        event = out["event"].cast(pa.string())
        bad = pc.unique(pc.filter(event, pc.invert(pc.is_in(event, pa.array(EVENTS)))))
    else:
        bad = []
    if len(bad):
        shown = ", ".join(repr(v) for v in bad.to_pylist()[:3])
        raise TraceError(path, f"column 'event' has unknown value(s) {shown}")
    for name in COLUMNS:
        if name not in _NULLABLE and out[name].null_count:
            raise TraceError(path, f"column '{name}' has {out[name].null_count} null value(s)")
    return out


def _plain_type(name: str) -> pa.DataType | None:
    """The type to build a column from Python values: strings plain, others as in SCHEMA."""
    if name not in COLUMNS:
        return None
    t = SCHEMA.field(name).type
    return t.value_type if pa.types.is_dictionary(t) else t


def _cast_column(col: pa.ChunkedArray, target: pa.Field, path: str | Path) -> pa.ChunkedArray:
    have = col.type
    if pa.types.is_dictionary(have):
        have = have.value_type
    want_str = pa.types.is_dictionary(target.type)
    ok = (
        pa.types.is_string(have) or pa.types.is_large_string(have) or pa.types.is_null(have)
        if want_str
        else pa.types.is_integer(have) or pa.types.is_null(have)
    )
    if not ok:
        kind = "a string" if want_str else "an integer"
        raise TraceError(path, f"column '{target.name}' has type {col.type}, expected {kind} type")
    if col.type == target.type:
        return col
    try:
        if want_str:
            return pc.dictionary_encode(col.cast(pa.string()))
        return col.cast(target.type, safe=target.name not in _BIT_PATTERNS)
    except pa.ArrowInvalid as e:
        first = str(e).splitlines()[0]
        raise TraceError(path, f"column '{target.name}' does not fit {target.type}: {first}") from e


@dataclass
class Trace:
    """A loaded trace: the events (cast to :data:`SCHEMA`) and the metadata."""

    path: Path
    table: pa.Table
    meta: TraceMeta

    @property
    def num_events(self) -> int:
        return self.table.num_rows

    def stack(self, stack_id: int | None) -> list[str]:
        """The frames of ``stack_id``, innermost first; ``[]`` when unknown or null."""
        if stack_id is None or not 0 <= stack_id < len(self.meta.stacks):
            return []
        return self.meta.stacks[stack_id]

    def sorted(self) -> pa.Table:
        """The events in reading order, ``(ts_ns, seq)``."""
        return self.table.sort_by([("ts_ns", "ascending"), ("seq", "ascending")])


def _recover_hint(path: Path) -> str:
    """What to run when a recording of ``path`` was cut short (its spool is beside it)."""
    spool = path.with_name(path.name + ".spool")
    if spool.is_dir():
        return f"its recording was cut short: run 'lktrace recover {spool}'"
    return "a recording cut short is recovered from its spool with 'lktrace recover'"


_STRINGS = [c for c in COLUMNS if pa.types.is_dictionary(SCHEMA.field(c).type)]


def _open(path: Path, **kwargs: Any) -> pq.ParquetFile:
    if not path.exists():
        spool = path.with_name(path.name + ".spool")
        raise TraceError(
            path, f"no such file; {_recover_hint(path)}" if spool.is_dir() else "no such file"
        )
    if path.is_dir():
        raise TraceError(path, "is a directory, not a trace file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        raise TraceError(path, e.strerror or str(e)) from e
    if head != b"PAR1":
        raise TraceError(path, "not a Parquet file")
    if tail != b"PAR1" or size < 12:
        raise TraceError(path, f"truncated Parquet file (no footer); {_recover_hint(path)}")
    try:
        return pq.ParquetFile(path, **kwargs)
    except (pa.ArrowException, OSError) as e:
        raise TraceError(path, f"unreadable Parquet file: {str(e).splitlines()[0]}") from e


def read_meta(path: str | Path) -> TraceMeta:
    """Read only the metadata of a trace file."""
    path = Path(path)
    return TraceMeta.from_kv(_open(path).metadata.metadata, path)


def _check_stacks(table: pa.Table, meta: TraceMeta, path: Path) -> None:
    top = pc.max(table["stack_id"]).as_py()
    if top is not None and meta.stacks and top >= len(meta.stacks):
        raise TraceError(
            path, f"stack_id {top} is past the stack table ({len(meta.stacks)} stacks)"
        )


def read_trace(path: str | Path) -> Trace:
    """Load and validate a trace file; raises :class:`TraceError` on bad input."""
    path = Path(path)
    pf = _open(path)
    meta = TraceMeta.from_kv(pf.metadata.metadata, path)
    present = [c for c in COLUMNS if c in pf.schema_arrow.names]
    string_cols = [c for c in present if pa.types.is_dictionary(SCHEMA.field(c).type)]
    try:
        table = pq.read_table(path, columns=present, read_dictionary=string_cols)
    except (pa.ArrowException, OSError) as e:
        raise TraceError(path, f"unreadable Parquet file: {str(e).splitlines()[0]}") from e
    # Each row group brings its own dictionaries; one per column lets
    # group-bys and joins run across row groups.
    table = conform(table, path).unify_dictionaries()
    _check_stacks(table, meta, path)
    return Trace(path, table, meta)


class TraceReader:
    """Reads a trace in time slices, so memory follows one row group, not the file.

    Slice ``k`` holds every event earlier than the first timestamp of the row
    groups after it (from the footer's statistics), so the slices are
    consecutive spans of time however the rows interleave; rows of a group
    that belong to a later span wait for it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pf = _open(self.path, read_dictionary=_STRINGS)
        self.meta = TraceMeta.from_kv(self._pf.metadata.metadata, self.path)
        self.num_events = self._pf.metadata.num_rows
        self._mins = self._group_minima()

    @property
    def first_ts(self) -> int | None:
        """The earliest event time, or None for an empty trace."""
        known = [m for m in self._mins if m is not None]
        return min(known) if known else None

    def _group_minima(self) -> list[int | None]:
        md = self._pf.metadata
        names = self._pf.schema_arrow.names
        if "ts_ns" not in names:
            raise TraceError(self.path, "missing column: ts_ns")
        col = names.index("ts_ns")
        mins: list[int | None] = []
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            stats = rg.column(col).statistics
            if rg.num_rows == 0:
                mins.append(None)
            elif stats is not None and stats.has_min_max:
                mins.append(int(stats.min))
            else:  # no statistics: read the one column
                ts = self._read(i, ["ts_ns"])["ts_ns"]
                mins.append(pc.min(ts).as_py())
        return mins

    def _read(self, group: int, columns: list[str]) -> pa.Table:
        try:
            return self._pf.read_row_group(group, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise TraceError(self.path, f"unreadable Parquet file: {str(e).splitlines()[0]}") from e

    @property
    def num_slices(self) -> int:
        """How many tables :meth:`slices` yields: one per row group, some maybe empty."""
        return len(self._mins)

    def slices(self) -> Iterator[pa.Table]:
        """The events, validated and cast to :data:`SCHEMA`, one span of time at a time.

        The next slice is read on a thread (pyarrow lets go of the GIL) while the
        caller works on the one it was handed.  The reader keeps no reference to
        a slice it handed out, so a caller that lets go of it frees it at once;
        once the caller is back for the next, freed memory goes back to the
        system: Arrow's allocator would keep it for the next to come.
        """
        it = self._spans()
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(next, it, None)
            while (got := [ahead.result()])[0] is not None:
                ahead = pool.submit(next, it, None)
                yield got.pop()  # handed over, not kept
                pa.default_memory_pool().release_unused()

    def _spans(self) -> Iterator[pa.Table]:
        present = [c for c in COLUMNS if c in self._pf.schema_arrow.names]
        later = [None] * len(self._mins)
        low = None
        for i in range(len(self._mins) - 1, -1, -1):
            later[i] = low
            m = self._mins[i]
            low = m if low is None or (m is not None and m < low) else low
        waiting: pa.Table | None = None
        for i, cut in enumerate(later):
            table = conform(self._read(i, present), self.path)
            _check_stacks(table, self.meta, self.path)
            if waiting is not None:
                table = pa.concat_tables([waiting, table])
                waiting = None
            if cut is not None:
                early = pc.less(table["ts_ns"], cut)
                if not pc.all(early).as_py():
                    waiting = table.filter(pc.invert(early))
                    table = table.filter(early)
            yield table


class TraceWriter:
    """Streams event batches into a trace file; the metadata goes in on :meth:`close`.

    A Parquet file is unreadable until its footer is written: for a recording
    that must survive being killed, spool first (see ``lktrace.collector``).
    """

    def __init__(self, path: str | Path, row_group_size: int = 1 << 20, sink: Any = None) -> None:
        """``sink``, when given, is an open binary file to write instead of ``path``
        (which then only names it in errors), e.g. one opened with O_NOFOLLOW."""
        self.path = Path(path)
        self.row_group_size = row_group_size
        self.rows = 0
        try:
            self._writer = pq.ParquetWriter(
                self.path if sink is None else sink, SCHEMA, compression="zstd"
            )
        except (pa.ArrowException, OSError) as e:
            raise TraceError(self.path, f"cannot write: {str(e).splitlines()[0]}") from e

    def write(self, events: pa.Table | pa.RecordBatch | Mapping[str, Sequence[Any]]) -> None:
        """Append events: a table, a record batch or a mapping of column lists."""
        if isinstance(events, Mapping):
            events = pa.table({k: pa.array(v, type=_plain_type(k)) for k, v in events.items()})
        elif isinstance(events, pa.RecordBatch):
            events = pa.Table.from_batches([events])
        events = conform(events, self.path)
        self._writer.write_table(events, row_group_size=self.row_group_size)
        self.rows += events.num_rows

    def close(self, meta: TraceMeta) -> None:
        """Write the metadata and the footer."""
        self._writer.add_key_value_metadata(meta.to_kv())
        self._writer.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer.is_open:
            self._writer.close()


def write_trace(
    path: str | Path, events: pa.Table | Mapping[str, Sequence[Any]], meta: TraceMeta
) -> Path:
    """Write a whole trace in one go."""
    with TraceWriter(path) as w:
        w.write(events)
        w.close(meta)
    return Path(path)
