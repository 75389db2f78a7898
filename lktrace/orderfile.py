"""Lock-order summary format v1: what ``analyze`` and ``diff`` need from a trace, in one table.

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
such field).  Records of a kind come in id order, so a record's id is its
position among its kind.  File metadata: ``lktrace:summary`` (the format
version), ``lktrace:traces`` (JSON: per trace its path, metadata, events and
time span), ``lktrace:filters`` (JSON: the filters it was made with) and
``lktrace:writer`` (the lktrace that wrote it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lktrace.replay.order import TABLES, Order, TraceInfo
from lktrace.trace import META_PREFIX, TraceError, TraceMeta, _open
from lktrace.version import writer_metadata

SUMMARY_VERSION = 1
SUMMARY_KEY = f"{META_PREFIX}summary"

#: Vocabulary records: (record name, Order attribute).
_VOCABS = (("class", "classes"), ("name", "names"), ("caller", "callers"), ("comm", "comms"))
_INT_COLUMNS = sorted({c for cols in TABLES.values() for c in cols})
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


def write_summary(path: str | Path, order: Order, filters: dict[str, Any]) -> Path:
    """Write ``order`` (and the filters it was made with) as a summary file."""
    parts = []
    for name, cols in TABLES.items():
        table = order[name]
        n = order.size(name)
        arrays = {"record": pa.array([name] * n).dictionary_encode()}
        arrays.update({c: pa.array(np.asarray(table[c], np.int64)) for c in cols})
        parts.append(pa.table(arrays))
    vocab = [(rec, getattr(order, attr)) for rec, attr in _VOCABS]
    vocab.append(("stack", ["\n".join(frames) for frames in order.stacks]))
    for rec, values in vocab:
        parts.append(
            pa.table({"record": pa.array([rec] * len(values)).dictionary_encode(), "text": values})
        )
    table = pa.concat_tables(
        [_conform(p) for p in parts], promote_options="default"
    ).unify_dictionaries()
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
    table = table.replace_schema_metadata(kv)
    try:
        pq.write_table(
            table,
            path,
            compression="zstd",
            row_group_size=1 << 20,
            # first witnesses come in time order: their deltas are small
            use_dictionary=[c for c in SCHEMA.names if c != "ts"],
            column_encoding={"ts": "DELTA_BINARY_PACKED"},
        )
    except (pa.ArrowException, OSError) as e:
        raise TraceError(path, f"cannot write: {str(e).splitlines()[0]}") from e
    return Path(path)


def _conform(part: pa.Table) -> pa.Table:
    cols = []
    for f in SCHEMA:
        if f.name in part.column_names:
            cols.append(part[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(part.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def read_summary(path: str | Path) -> tuple[Order, dict[str, Any]]:
    """Load a summary file: its Order and the filters it was made with."""
    path = Path(path)
    pf = _open(path)
    kv = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items()}
    version = kv.get(SUMMARY_KEY)
    if version != str(SUMMARY_VERSION):
        raise TraceError(
            path,
            f"summary format version {version!r} is not supported "
            f"(this lktrace reads {SUMMARY_VERSION})",
        )
    try:
        table = pf.read()
        traces = json.loads(kv[f"{META_PREFIX}traces"])
        filters = json.loads(kv.get(f"{META_PREFIX}filters", "{}"))
        record = table["record"].combine_chunks()
        kinds = record.dictionary.to_pylist()
        codes = record.indices.to_numpy(zero_copy_only=False)
        order = Order()
        for t in traces:
            meta = TraceMeta(**t["meta"])
            order.traces.append(
                TraceInfo(t["path"], meta, t["events"], t["first_ns"], t["last_ns"])
            )
        rows = {k: np.flatnonzero(codes == i) for i, k in enumerate(kinds)}
        none = np.zeros(0, np.int64)
        for name, cols in TABLES.items():
            at = rows.get(name, none)
            order.tables[name] = {
                c: pc.fill_null(table[c].take(at), -1).to_numpy().astype(np.int64) for c in cols
            }
        text = {k: table["text"].take(rows.get(k, none)).to_pylist() for k in kinds}
        for rec, attr in _VOCABS:
            setattr(order, attr, text.get(rec, []))
        order.stacks = [s.split("\n") if s else [] for s in text.get("stack", [])]
    except (KeyError, ValueError, TypeError, pa.ArrowException) as e:
        raise TraceError(path, f"malformed lock-order summary ({e})") from e
    return order, filters


def filters_dict(filters: Any) -> dict[str, Any]:
    """The replay filters as JSON-able data (sets as sorted lists)."""
    d = asdict(filters)
    return {
        k: sorted(d[k]) if isinstance(d[k], set) else d[k]
        for k in ("comms", "tids", "since_s", "until_s")
    }
