"""Trace format v1: round trip, files from plain pyarrow, and one-line errors."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import build_columns, locked, unlocked

from lktrace.trace import (
    SCHEMA,
    StackTable,
    TraceError,
    TraceMeta,
    TraceReader,
    read_meta,
    read_trace,
    write_trace,
)
from lktrace.version import writer

ROWS = (
    locked(7, "pci:0000:01:00.0")
    + locked(7, "0xffff888012345678")
    + unlocked(7, "0xffff888012345678")
)


def test_round_trip(tmp_path):
    stacks = StackTable()
    cols = build_columns(ROWS)
    cols["stack_id"] = [
        stacks.intern(["mutex_lock+0x1d", f"caller_{i % 2}+0x3c"]) for i in range(len(ROWS))
    ]
    meta = TraceMeta(
        kernel="6.12.0-test",
        host="box",
        duration_ns=5,
        probes=["mutex_lock"],
        lost_events=3,
        command="lktrace record",
        stacks=stacks.stacks,
        extra={"backend": "kprobe"},
    )
    path = write_trace(tmp_path / "t.parquet", cols, meta)
    t = read_trace(path)
    assert t.table.schema.equals(SCHEMA)
    assert t.table["lock_addr"].to_pylist() == cols["lock_addr"]
    assert t.table["lock_class"].to_pylist()[:2] == ["device_lock", "device_lock"]
    assert t.meta == replace(meta, extra={**meta.extra, "writer": writer()})
    assert t.stack(1) == ["mutex_lock+0x1d", "caller_1+0x3c"] and t.stack(None) == []
    assert read_meta(path).lost_events == 3
    assert len(stacks) == 2 and stacks.intern(["mutex_lock+0x1d", "caller_0+0x3c"]) == 0


def plain_table(**changes) -> pa.Table:
    """What a user writes with pandas/pyarrow: int64 everywhere, plain strings."""
    cols = build_columns(ROWS)
    cols["lock_addr"] = [a - (1 << 64) for a in cols["lock_addr"]]  # as signed int64
    cols.update(changes)
    return pa.table(cols)


def test_plain_pyarrow_file_is_read(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(plain_table(), path)
    t = read_trace(path)
    assert t.table["lock_addr"].to_pylist() == build_columns(ROWS)["lock_addr"]
    assert t.meta.stacks == [] and t.num_events == len(ROWS)
    assert t.sorted()["seq"].to_pylist() == list(range(len(ROWS)))


def test_extra_columns_and_keys_are_ignored(tmp_path):
    path = tmp_path / "extra.parquet"
    table = plain_table().append_column("note", pa.array(["x"] * len(ROWS)))
    pq.write_table(table.replace_schema_metadata({"lktrace:format": "1", "other": "y"}), path)
    assert read_trace(path).table.column_names == SCHEMA.names


def error_of(path) -> str:
    with pytest.raises(TraceError) as e:
        read_trace(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_errors(tmp_path):
    assert "no such file" in error_of(tmp_path / "missing.parquet")
    assert "directory" in error_of(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not parquet")
    assert "not a Parquet file" in error_of(text)

    missing = tmp_path / "missing-col.parquet"
    pq.write_table(plain_table().drop_columns(["caller", "tid"]), missing)
    assert "missing columns: tid, caller" in error_of(missing)

    wrong = tmp_path / "wrong-type.parquet"
    pq.write_table(plain_table(ts_ns=["soon"] * len(ROWS)), wrong)
    assert "column 'ts_ns' has type string" in error_of(wrong)

    event = tmp_path / "event.parquet"
    pq.write_table(plain_table(event=["grabbed"] * len(ROWS)), event)
    assert "unknown value(s) 'grabbed'" in error_of(event)

    future = tmp_path / "v9.parquet"
    pq.write_table(plain_table().replace_schema_metadata({"lktrace:format": "9"}), future)
    assert "format version '9' is not supported" in error_of(future)

    good = write_trace(tmp_path / "good.parquet", build_columns(ROWS), TraceMeta())
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-100])
    assert "truncated" in error_of(cut) and "lktrace recover" in error_of(cut)

    stacks = tmp_path / "stacks.parquet"
    cols = build_columns(ROWS)
    cols["stack_id"] = [5] * len(ROWS)
    write_trace(stacks, cols, TraceMeta(stacks=[["a+0x1"]]))
    assert "past the stack table" in error_of(stacks)


def test_reader_slices_are_consecutive_spans(tmp_path):
    """Rows out of time order across row groups: each slice holds the events before the
    next ones, every event once, one slice per row group (read ahead on a thread)."""
    cols = build_columns(ROWS * 20)
    n = len(cols["seq"])
    swap = [i ^ 1 for i in range(n)]  # neighbours swapped: groups overlap in time
    path = write_trace(tmp_path / "jumbled.parquet", cols, TraceMeta())
    pq.write_table(pq.read_table(path).take(swap), path, row_group_size=7)
    reader = TraceReader(path)
    got = list(reader.slices())
    assert len(got) == reader.num_slices == pq.ParquetFile(path).metadata.num_row_groups
    ts = [t["ts_ns"].to_pylist() for t in got]
    assert sorted(x for part in ts for x in part) == sorted(cols["ts_ns"])
    spans = [(min(p), max(p)) for p in ts if p]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))

    bad = tmp_path / "bad-group.parquet"
    cols["stack_id"] = [0] * (n - 1) + [5]
    write_trace(bad, cols, TraceMeta(stacks=[["a+0x1"]]))
    kv = pq.ParquetFile(bad).metadata.metadata
    pq.write_table(pq.read_table(bad).replace_schema_metadata(kv), bad, row_group_size=7)
    with pytest.raises(TraceError, match="past the stack table"):
        list(TraceReader(bad).slices())


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    text = tmp_path / "bad.parquet"
    text.write_text("nope")
    for cmd in ("info", "analyze"):
        proc = subprocess.run(
            [sys.executable, "-m", "lktrace", cmd, str(text)], capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == f"lktrace: {text}: not a Parquet file\n"


def test_info(tmp_path):
    path = write_trace(tmp_path / "t.parquet", build_columns(ROWS), TraceMeta(kernel="6.1.0-x"))
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "info", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "6.1.0-x" in proc.stdout and "device_lock" in proc.stdout and "task7" in proc.stdout


def test_info_prints_brackets_as_they_are(tmp_path):
    meta = TraceMeta(command="lktrace record -- python3 -c '[t.join() for t in ts]'")
    path = write_trace(tmp_path / "t.parquet", build_columns(ROWS), meta)
    proc = subprocess.run(
        [sys.executable, "-m", "lktrace", "info", str(path)], capture_output=True, text=True
    )
    assert "[t.join() for t in ts]" in proc.stdout
