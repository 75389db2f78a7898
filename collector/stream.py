"""Writing a trace while it is recorded: decoded batches go to the Parquet file on a
thread, gathered into row groups as they fill, so the file is done moments after the
recording stops and memory holds at most one row group and a few batches.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from lktrace.trace import TraceMeta, TraceWriter


class RowGroups:
    """Gathers tables or batches and writes them in row groups of ``size`` rows."""

    def __init__(self, writer: TraceWriter, size: int) -> None:
        self.writer = writer
        self.size = size
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, data: pa.Table | pa.RecordBatch) -> None:
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        self._pending += batches
        self._rows += data.num_rows
        if self._rows >= self.size:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.writer.write(pa.Table.from_batches(self._pending).unify_dictionaries())
        self._pending, self._rows = [], 0


class TraceStream:
    """A trace file written by a background thread; :meth:`close` adds the metadata."""

    def __init__(
        self, name: Path, sink: BinaryIO, row_group_size: int = 1 << 20, depth: int = 4
    ) -> None:
        self._writer = TraceWriter(name, row_group_size=row_group_size, sink=sink)
        self._groups = RowGroups(self._writer, row_group_size)
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lktrace-parquet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (table := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._groups.add(table)
                except BaseException as e:  # re-raised in the recording thread
                    self._error = e

    def put(self, table: pa.Table) -> None:
        """Queue a table (blocks while ``depth`` tables wait: back-pressure on the drain)."""
        if self._error is not None:
            raise self._error
        self._queue.put(table)

    def close(self, meta: TraceMeta) -> int:
        """Write what is left and the footer; returns the number of events."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._groups.flush()
        self._writer.close(meta)
        return self._writer.rows
