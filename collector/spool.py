"""The crash-safe spool: an Arrow IPC stream that a recording appends to as it goes.

Each flush appends one record batch of format v1 events whose custom metadata carries
the stacks first seen in it and the running counters, then fsyncs. A recorder killed
at any point leaves a stream whose complete batches are all readable, and :func:`convert`
(``lktrace recover``) turns them into the Parquet trace that a normal finish would have
written. The stream's schema metadata holds what was known at the start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from lktrace.collector.stream import RowGroups
from lktrace.trace import SCHEMA, TraceError, TraceMeta, TraceWriter

EVENTS_FILE = "events.arrows"
SPOOL_SUFFIX = ".spool"


def spool_path(output: Path) -> Path:
    """The spool directory of an output file: ``trace.parquet.spool``."""
    return output.with_name(output.name + SPOOL_SUFFIX)


class SpoolWriter:
    """Appends batches to ``DIR/events.arrows`` (DIR exists); every :meth:`append` is durable."""

    def __init__(self, directory: Path, meta: TraceMeta) -> None:
        self.dir = directory
        self._file = open(self.dir / EVENTS_FILE, "xb")  # noqa: SIM115 (closed in close())
        schema = SCHEMA.with_metadata(meta.to_kv())
        self._writer = pa.ipc.new_stream(self._file, schema)
        # the schema goes out with the first batch: an empty one makes the spool readable now
        self._writer.write_batch(pa.RecordBatch.from_pylist([], SCHEMA))
        self._sync()
        self.rows = 0

    @property
    def size(self) -> int:
        """Bytes in the spool so far."""
        return self._file.tell()

    def append(
        self,
        batch: pa.Table,
        new_stacks: list[list[str]],
        lost: int,
        duration_ns: int,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Append ``batch`` with the stacks it introduces and the counters so far
        (``extra``: metadata keys known only now, e.g. kernel-side counters)."""
        counters = {
            "lost_events": str(lost),
            "duration_ns": str(duration_ns),
            "extra": json.dumps(extra or {}),
        }
        custom = {"stacks": json.dumps(new_stacks), **counters}
        batches = batch.combine_chunks().to_batches() or [pa.RecordBatch.from_pylist([], SCHEMA)]
        for rb in batches:
            self._writer.write_batch(rb, custom_metadata=custom)
            custom = {"stacks": "[]", **counters}
        self.rows += batch.num_rows
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._writer.close()
            self._sync()
        finally:
            self._file.close()


def read_spool(directory: Path) -> tuple[TraceMeta, Iterator[pa.RecordBatch], dict]:
    """The start metadata and the complete batches of a spool.

    The returned dict is filled while iterating: ``stacks``, ``lost_events``,
    ``duration_ns``, ``extra`` and ``truncated`` (the stream ended in a partial batch).
    """
    path = Path(directory) / EVENTS_FILE
    if not path.is_file():
        raise TraceError(directory, f"not a spool directory (no {EVENTS_FILE})")
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise TraceError(directory, f"spool is unreadable: {str(e).splitlines()[0]}") from e
    meta = TraceMeta.from_kv(reader.schema.metadata, directory)
    state: dict = {
        "stacks": [],
        "lost_events": 0,
        "duration_ns": 0,
        "extra": {},
        "truncated": False,
    }

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                rb, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):
                state["truncated"] = True
                return
            custom = custom or {}
            state["stacks"] += json.loads(custom.get(b"stacks", b"[]"))
            state["lost_events"] = int(custom.get(b"lost_events", 0))
            state["duration_ns"] = int(custom.get(b"duration_ns", 0))
            state["extra"].update(json.loads(custom.get(b"extra", b"{}")))
            yield rb

    return meta, batches(), state


def convert(
    directory: Path,
    name: Path,
    sink: BinaryIO,
    row_group_size: int = 1 << 20,
) -> tuple[TraceMeta, int]:
    """Write the Parquet trace held by a spool to ``sink`` (``name`` labels errors);
    returns its metadata and event count. The metadata says it was recovered."""
    meta, batches, state = read_spool(directory)
    with TraceWriter(name, row_group_size=row_group_size, sink=sink) as writer:
        groups = RowGroups(writer, row_group_size)
        for rb in batches:
            groups.add(rb)
        groups.flush()
        meta.stacks = state["stacks"]
        meta.lost_events = max(meta.lost_events, state["lost_events"])
        meta.duration_ns = state["duration_ns"] or meta.duration_ns
        meta.extra.update(state["extra"])
        meta.extra["recovered"] = "yes: the recorder stopped without finishing"
        if state["truncated"]:
            meta.extra["spool"] = "truncated: the last partial batch was dropped"
        writer.close(meta)
    return meta, writer.rows
