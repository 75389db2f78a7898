"""Shared test helpers: build small traces by hand; draw with Graphviz or without."""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from lktrace.replay import dot
from lktrace.replay.order import TABLES, VOCABULARIES, Order
from lktrace.trace import TraceMeta, write_trace

# (tid, event, lock) or (tid, event, lock, api); lock is a name: "pci:..." names a
# device_lock, "0x..." an anonymous mutex of class "mutex@caller", anything else a
# named lock whose class is its name.
Row = tuple


def lock_fields(lock: str) -> tuple[str, str, int]:
    """(class, name, address) for a lock label used in hand-built traces."""
    addr = 0xFFFF888000000000 + zlib.crc32(lock.encode()) * 64
    if lock.startswith("pci:"):
        return "device_lock", lock, addr
    if lock.startswith("0x"):
        return "mutex@caller", lock, int(lock, 16)
    return lock, lock, addr


def build_columns(rows: Sequence[Row], step_ns: int = 1000) -> dict[str, list]:
    """Trace columns for ``rows``, one event each, ``step_ns`` apart."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "seq",
            "ts_ns",
            "cpu",
            "pid",
            "tid",
            "comm",
            "event",
            "api",
            "lock_addr",
            "lock_class",
            "lock_name",
            "caller",
            "stack_id",
        )
    }
    for i, row in enumerate(rows):
        tid, event, lock = row[:3]
        api = row[3] if len(row) > 3 else ("mutex_unlock" if event == "released" else "mutex_lock")
        cls, name, addr = lock_fields(lock)
        cols["seq"].append(i)
        cols["ts_ns"].append(1_000_000_000 + i * step_ns)
        cols["cpu"].append(tid % 2)
        cols["pid"].append(tid)
        cols["tid"].append(tid)
        cols["comm"].append(f"task{tid}")
        cols["event"].append(event)
        cols["api"].append(api)
        cols["lock_addr"].append(addr)
        cols["lock_class"].append(cls)
        cols["lock_name"].append(name)
        cols["caller"].append(f"fn_{tid}_{i}+0x10")
        cols["stack_id"].append(None)
    return cols


@pytest.fixture
def make_trace(tmp_path: Path) -> Callable[..., Path]:
    """Write ``rows`` as a trace file and return its path."""

    def make(rows: Sequence[Row], name: str = "t.parquet", **meta) -> Path:
        return write_trace(tmp_path / name, build_columns(rows), TraceMeta(**meta))

    return make


def locked(tid: int, lock: str, api: str = "mutex_lock") -> list[Row]:
    """Rows of one successful acquisition."""
    return [(tid, "attempt", lock, api), (tid, "acquired", lock, api)]


def unlocked(tid: int, lock: str, api: str = "mutex_unlock") -> list[Row]:
    return [(tid, "released", lock, api)]


@pytest.fixture(params=["graphviz", "fallback"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Draw graphs with Graphviz, or with the pure-Python layout as if it were missing."""
    if request.param == "graphviz" and shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed")
    if request.param == "fallback":
        monkeypatch.setattr(dot.shutil, "which", lambda name: None)
    return request.param


def assert_same_order(a: Order, b: Order) -> None:
    """Every table column, value for value and as int64, every vocabulary and trace."""
    for t, cols in TABLES.items():
        for c in cols:
            assert b[t][c].dtype == np.int64, (t, c)
            assert np.array_equal(a[t][c], b[t][c]), (t, c)
    for v in VOCABULARIES:
        assert getattr(a, v) == getattr(b, v), v
    assert [t.__dict__ for t in a.traces] == [t.__dict__ for t in b.traces]
