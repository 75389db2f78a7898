"""Lock-order summary format v2: what ``analyze`` and ``diff`` need from a trace, in one table.

``lktrace summarize trace.parquet -o trace.order.parquet`` replays a trace
once and keeps its :class:`~lktrace.replay.order.Order`: orderings (edges at
both levels, with counts and witnesses), call sites and their stacks,
nesting maxima, pending attempts, locks held at the end, releases of locks
not held, wait and hold time histograms.  ``analyze`` and ``diff`` take a
summary wherever they take a trace, with the same findings.

One Parquet table, one row per record: ``record`` names the kind (a table
of the Order, or a vocabulary: ``class``, ``name``, ``caller``, ``comm``,
``stack``), ``text`` holds a vocabulary's string (a stack's frames joined by
newlines), the integer columns the record's fields (null where a kind has no
such field), some stored relative (:mod:`lktrace.orderpack`).  Records of a
kind come in id order, so a record's id is its position among its kind.
File metadata: ``lktrace:summary`` (the format version), ``lktrace:traces``
(JSON: per trace its path, metadata, events and time span),
``lktrace:filters`` (JSON: the filters it was made with) and
``lktrace:writer`` (the lktrace that wrote it).

Version 1 (the same table with every column stored as it is, never released)
is refused like any other: summarising the trace again writes version 2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lktrace.orderpack import ENCODINGS, pack, unpack
from lktrace.replay.order import TABLES, Order, TraceInfo
from lktrace.trace import META_PREFIX, TraceError, TraceMeta, _open
from lktrace.version import writer_metadata

SUMMARY_VERSION = 2
SUMMARY_KEY = f"{META_PREFIX}summary"

#: Vocabulary records: (record name, Order attribute).
_VOCABS = (("class", "classes"), ("name", "names"), ("caller", "callers"), ("comm", "comms"))
_INT_COLUMNS = sorted({c for cols in TABLES.values() for c in cols})
_KINDS = [*TABLES, *(rec for rec, _ in _VOCABS), "stack"]
#: Records per row group.
GROUP_ROWS = 1 << 18
#: zstd level: 12 packs the lab traces' summaries 12 % tighter than level 1, costing little.
ZSTD_LEVEL = 12
SCHEMA = pa.schema(
    [("record", pa.dictionary(pa.int8(), pa.string())), ("text", pa.string())]
    + [(c, pa.int64()) for c in _INT_COLUMNS]
)


def is_summary(path: str | Path) -> bool:
    """Whether ``path`` is a lock-order summary (rather than a trace)."""
    pf = _open(Path(path))
    return SUMMARY_KEY.encode() in (pf.metadata.metadata or {})


def _meta_dict(meta: TraceMeta) -> dict[str, Any]:
    return {f.name: getattr(meta, f.name) for f in fields(meta) if f.name != "stacks"}


def _records(order: Order):
    """(record kind, columns as stored) of every record kind of ``order``, tables then
    vocabularies."""
    counts = np.asarray(order["orderings"]["count"], np.int64)
    for name, cols in TABLES.items():
        yield name, pack(name, {c: order[name][c] for c in cols}, counts)
    for rec, attr in _VOCABS:
        yield rec, {"text": pa.array(getattr(order, attr), pa.string())}
    yield "stack", {"text": pa.array(["\n".join(frames) for frames in order.stacks], pa.string())}


def write_summary(path: str | Path, order: Order, filters: dict[str, Any]) -> Path:
    """Write ``order`` (and the filters it was made with) as a summary file.

    Row groups of at most :data:`GROUP_ROWS` records of one kind each, so that
    neither writing nor reading ever holds all columns of all records.
    """
    traces = [
        {
            "path": t.path,
            "meta": _meta_dict(t.meta),
            "events": t.events,
            "first_ns": t.first_ns,
            "last_ns": t.last_ns,
        }
        for t in order.traces
    ]
    kv = {
        SUMMARY_KEY: str(SUMMARY_VERSION),
        f"{META_PREFIX}traces": json.dumps(traces),
        f"{META_PREFIX}filters": json.dumps(filters, sort_keys=True),
        **writer_metadata(),
    }
    kinds = pa.array(_KINDS)
    try:
        with pq.ParquetWriter(
            path,
            SCHEMA,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            use_dictionary=[c for c in SCHEMA.names if c not in ENCODINGS],
            column_encoding=ENCODINGS,
            # readers take whole kinds and know the schema: no statistics, no Arrow schema
            write_statistics=False,
            store_schema=False,
        ) as w:
            batch: list[pa.Table] = []
            rows = 0
            for kind, cols in _records(order):
                n = len(next(iter(cols.values())))
                for lo in range(0, max(n, 1), GROUP_ROWS):
                    hi = min(lo + GROUP_ROWS, n)
                    code = np.full(hi - lo, _KINDS.index(kind), np.int8)
                    arrays = []
                    for f in SCHEMA:
                        if f.name == "record":
                            arrays.append(pa.DictionaryArray.from_arrays(code, kinds))
                        elif f.name in cols:
                            arrays.append(cols[f.name][lo:hi])
                        else:
                            arrays.append(pa.nulls(hi - lo, f.type))
                    batch.append(pa.Table.from_arrays(arrays, schema=SCHEMA))
                    rows += hi - lo
                    if rows >= GROUP_ROWS:  # small kinds share a row group
                        w.write_table(pa.concat_tables(batch), row_group_size=GROUP_ROWS)
                        batch, rows = [], 0
            if batch:
                w.write_table(pa.concat_tables(batch), row_group_size=GROUP_ROWS)
            w.add_key_value_metadata(kv)  # in the Parquet footer (no Arrow schema to carry it)
    except (pa.ArrowException, OSError) as e:
        raise TraceError(path, f"cannot write: {str(e).splitlines()[0]}") from e
    return Path(path)


def read_summary(path: str | Path) -> tuple[Order, dict[str, Any]]:
    """Load a summary file: its Order and the filters it was made with."""
    path = Path(path)
    pf = _open(path, read_dictionary=["record"])
    kv = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items()}
    version = kv.get(SUMMARY_KEY)
    if version != str(SUMMARY_VERSION):
        raise TraceError(
            path,
            f"summary format version {version!r} is not supported "
            f"(this lktrace reads {SUMMARY_VERSION}): summarize the trace again",
        )
    try:
        traces = json.loads(kv[f"{META_PREFIX}traces"])
        filters = json.loads(kv.get(f"{META_PREFIX}filters", "{}"))
        record = pf.read(columns=["record"])["record"]
        # each row group may spell its own dictionary: codes in _KINDS
        codes = np.concatenate(
            [
                np.array([_KINDS.index(v) for v in c.dictionary.to_pylist()], np.int8)[
                    c.indices.to_numpy()
                ]
                for c in record.chunks
                if len(c)
            ]
            or [np.zeros(0, np.int8)]
        )
        names = _KINDS
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows
                                  for i in range(pf.metadata.num_row_groups)])  # fmt: skip

        def rows_of(kind: str, columns: list[str]) -> pa.Table | None:
            """The records of ``kind`` (contiguous in the file), reading their row groups only."""
            if kind not in names:
                return None
            at = np.flatnonzero(codes == names.index(kind))
            if not len(at):
                return None
            lo, hi = int(at[0]), int(at[-1]) + 1
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            last = int(np.searchsorted(starts, hi - 1, side="right")) - 1
            table = pf.read_row_groups(list(range(first, last + 1)), columns=columns)
            return table.slice(lo - int(starts[first]), hi - lo)

        order = Order()
        for t in traces:
            meta = TraceMeta(**t["meta"])
            info = TraceInfo(t["path"], meta, t["events"], t["first_ns"], t["last_ns"])
            order.traces.append(info)
        counts = np.zeros(0, np.int64)
        for name, cols in TABLES.items():
            table = rows_of(name, list(cols))
            order.tables[name] = (
                unpack(name, {c: table[c] for c in cols}, counts)
                if table
                else {c: np.zeros(0, np.int64) for c in cols}
            )
            if name == "orderings":
                counts = order.tables[name]["count"]
        for rec, attr in [*_VOCABS, ("stack", "stacks")]:
            table = rows_of(rec, ["text"])
            text = table["text"].to_pylist() if table else []
            if rec == "stack":
                text = [s.split("\n") if s else [] for s in text]
            setattr(order, attr, text)
    except (KeyError, IndexError, ValueError, TypeError, pa.ArrowException) as e:
        raise TraceError(path, f"malformed lock-order summary ({e})") from e
    return order, filters


def filters_dict(filters: Any) -> dict[str, Any]:
    """The replay filters as JSON-able data (sets as sorted lists)."""
    d = asdict(filters)
    return {
        k: sorted(d[k]) if isinstance(d[k], set) else d[k]
        for k in ("comms", "tids", "since_s", "until_s")
    }
