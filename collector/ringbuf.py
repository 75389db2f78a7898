"""Reading a BPF ring buffer (v5.8+) straight from its memory, a batch at a time.

BCC calls back into Python once per record, which caps a drain at some 10^5 records/s.
All of lktrace's records have one size, so the committed part of the ring can instead be
viewed as an array and copied out in one go. The layout is the kernel's
(kernel/bpf/ringbuf.c): a writable consumer-position page, then a read-only
producer-position page and the data pages, mapped twice in a row so that any stretch up
to the ring's size is contiguous. Each record starts with an 8-byte header: its length
with a busy bit (still being written) and a discard bit.

The kernel publishes with release stores and this reads with plain loads, which x86-64
keeps in order (the architecture lktrace records on); elsewhere BCC's reader would be
needed.
"""

from __future__ import annotations

import mmap
import select

import numpy as np

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8


class RingReader:
    """Consumes a ring buffer map of fixed-size records into bytes."""

    def __init__(self, map_fd: int, data_size: int, record_size: int) -> None:
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(
            map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._cons_pos = np.frombuffer(self._cons, dtype="<u8", count=1)
        self._prod_pos = np.frombuffer(self._prod, dtype="<u8", count=1)
        self._data = np.frombuffer(self._prod, dtype=np.uint8, offset=page)
        self._mask = data_size - 1
        self.record = record_size
        self.stride = (record_size + HEADER + 7) // 8 * 8
        self._poll = select.epoll()
        self._poll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Sleep until the kernel signals data or ``timeout_ms`` passes."""
        self._poll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)

    def read(self) -> bytes:
        """The committed records since the last read (their payloads, concatenated)."""
        cons = int(self._cons_pos[0])
        prod = int(self._prod_pos[0])
        if prod <= cons:
            return b""
        start = cons & self._mask
        region = self._data[start : start + (prod - cons)]
        n = len(region) // self.stride
        rows = region[: n * self.stride].reshape(n, self.stride)
        lengths = rows[:, :4].copy().view("<u4")[:, 0]
        busy = np.flatnonzero(lengths & BUSY)
        if len(busy):
            n = int(busy[0])  # the rest is still being written
            rows, lengths = rows[:n], lengths[:n]
        odd = lengths & ~np.uint32(DISCARD) != self.record
        if odd.any():
            raise ValueError(
                f"ring buffer record of {int(lengths[odd][0])} bytes, not {self.record}"
            )
        keep = (lengths & DISCARD) == 0
        out = rows[keep, HEADER : HEADER + self.record].tobytes()
        self._cons_pos[0] = cons + n * self.stride  # hands the space back to the kernel
        return out

    def close(self) -> None:
        self._poll.close()
        del self._cons_pos, self._prod_pos, self._data
        self._cons.close()
        self._prod.close()
