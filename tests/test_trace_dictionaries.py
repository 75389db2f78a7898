"""A trace whose row groups carry different dictionaries reads as one set of dictionaries."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from lktrace.summary import summarize
from lktrace.trace import SCHEMA, TraceMeta, TraceWriter, read_trace


def _batch(comms: list[str], seq0: int) -> pa.Table:
    n = len(comms)
    columns = {
        f.name: pa.array([seq0 + i for i in range(n)], f.type)
        for f in SCHEMA
        if not pa.types.is_dictionary(f.type)
    }
    strings = {"event": "attempt", "api": "mutex_lock", "lock_class": "mutex@f",
               "lock_name": "0x1", "caller": "f+0x1"}  # fmt: skip
    columns |= {k: pa.array([v] * n).dictionary_encode() for k, v in strings.items()}
    columns["comm"] = pa.array(comms).dictionary_encode()
    return pa.table({f.name: columns[f.name] for f in SCHEMA})


def test_row_groups_with_their_own_dictionaries_group_together(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with TraceWriter(path) as w:
        w.write(_batch(["bash", "udevd"], 0))
        w.write(_batch(["udevd", "kworker/0:1", "bash"], 2))
        w.close(TraceMeta())
    trace = read_trace(path)
    assert trace.table["comm"].num_chunks == 2
    assert sorted(comm for _, comm, _ in summarize(trace)["tasks"]) == [
        "bash", "bash", "kworker/0:1", "udevd", "udevd"]  # fmt: skip
