"""The drain loop: event source → batches → decoded tables with (ts, seq) → spool and
the trace being written.

Source-agnostic: anything with ``poll``/``take``/``lost``/``stack_lookup``/``apis`` (the
BCC sources, or the synthetic source of the tests and the benchmark) is recorded the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lktrace.collector.events import Decoder, StackLookup
from lktrace.collector.spool import SpoolWriter
from lktrace.collector.stream import TraceStream
from lktrace.probes.kallsyms import Kallsyms


class EventSource(Protocol):
    """Where raw event records come from."""

    apis: Sequence[str]
    stack_lookup: StackLookup | None
    buffered: int  # bytes waiting in take()

    def poll(self, timeout_ms: int) -> None: ...
    def take(self) -> bytes: ...
    def counters(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    @property
    def lost(self) -> int: ...


@dataclass
class Progress:
    """What the status line and the final summary show."""

    events: int = 0
    lost: int = 0
    elapsed_ns: int = 0
    spool_bytes: int = 0


class Drain:
    """Moves events from a source to a spool (and a trace stream, when given), flushing at
    least every ``interval`` s and whenever ``max_buffer`` bytes are waiting, so memory
    stays bounded."""

    def __init__(
        self,
        source: EventSource,
        spool: SpoolWriter,
        syms: Kallsyms,
        stream: TraceStream | None = None,
        interval: float = 0.5,
        max_buffer: int = 32 << 20,
    ) -> None:
        self.source = source
        self.spool = spool
        self.stream = stream
        self.decoder = Decoder(syms, source.apis, source.stack_lookup)
        self.interval = interval
        self.max_buffer = max_buffer
        self.progress = Progress()
        self._stacks_out = 0
        self._start = time.monotonic_ns()
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Decode what is waiting and append it, with new stacks and counters, durably."""
        raw = self.source.take()
        table = self.decoder.decode(raw, self.progress.events)
        stacks = self.decoder.stacks.stacks
        new = stacks[self._stacks_out :]
        self._stacks_out = len(stacks)
        p = self.progress
        p.events += table.num_rows
        p.lost = self.source.lost
        p.elapsed_ns = time.monotonic_ns() - self._start
        self.spool.append(table, new, p.lost, p.elapsed_ns)
        if self.stream is not None and table.num_rows:
            self.stream.put(table)
        p.spool_bytes = self.spool.size
        self._last_flush = time.monotonic()

    def run(
        self,
        stop: Callable[[], bool],
        on_tick: Callable[[Progress], None] | None = None,
        poll_ms: int = 100,
    ) -> Progress:
        """Drain until ``stop()`` is true, then drain what is left and flush."""
        while not stop():
            self.source.poll(poll_ms)
            due = time.monotonic() - self._last_flush >= self.interval
            if due or self.source.buffered >= self.max_buffer:
                self.flush()
                if on_tick:
                    on_tick(self.progress)
        self.source.poll(0)
        self.flush()
        return self.progress
