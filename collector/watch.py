"""``lktrace watch``: a flight recorder that writes the evidence of a deadlock as it happens.

The probes, scope and backends are ``record``'s (:func:`lktrace.collector.record.open_source`)
and so is the drain; the drain's sink is a :class:`~lktrace.collector.ring.Ring` in
memory instead of a spool, so nothing reaches the disk while nothing is wrong. Once a
second the tasks whose blocking attempt has been pending longer than ``--stuck`` are
looked up in the ring and in the BPF ``held`` map, and their wait-for graph is searched
(:mod:`lktrace.collector.waitfor`). A deadlock, or a long wait past ``--stuck-hard``,
is written once: a line to stderr and the kernel log first (it survives on the console
even if the disk is what hangs), then ``analyze``'s text, then the ring as a trace.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import importlib
import io
import json
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.collector import output
from lktrace.collector.errors import CollectorError
from lktrace.collector.pipeline import Drain, EventSource, Progress
from lktrace.collector.record import (
    StopFlag,
    load_symbols,
    open_source,
    overflows,
    start_meta,
)
from lktrace.collector.ring import Ring
from lktrace.collector.waitfor import Finding, Holder, Wait, find
from lktrace.console import fmt_count
from lktrace.probes.kallsyms import Kallsyms
from lktrace.trace import Trace, TraceMeta, TraceWriter, conform

KMSG = Path("/dev/kmsg")
#: The kernel keeps log records shorter than this (LOG_LINE_MAX is 1024 less a prefix).
KMSG_MAX = 900
#: How often the stuck tasks are looked at (seconds).
CHECK_EVERY = 1.0
UNIT_FILE = "lktrace-watch.service"
#: Why a dump is written, by the start of its file name.
REASONS = {"deadlock": "deadlock", "long-wait": "long wait", "snapshot": "snapshot (SIGUSR1)"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|)\s*$")
_SCALE = {"ms": 1e-3, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``120s``, ``2m``, ``500ms``, ``1h`` or a plain number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 120s, 2m, 500ms)")
    return float(m[1]) * _SCALE[m[2]]


@dataclass
class WatchRequest:
    """The command line of ``lktrace watch`` (the probe options are ``record``'s)."""

    dir: Path = Path(".")
    keep_s: float = 120.0
    max_mb: int = 256
    stuck_s: float = 10.0
    stuck_hard_s: float = 120.0
    scope: str = "pci"
    stacks: bool = True
    pid: int | None = None
    comm: str | None = None
    backend: str = "auto"
    buffer_mb: int = 16
    argv: list[str] = field(default_factory=list)


def unit_text() -> str:
    """The systemd unit shipped in the package, run by this Python's lktrace."""
    text = files("lktrace").joinpath("data", UNIT_FILE).read_text()
    return text.replace("@LKTRACE@", f"{sys.executable} -m lktrace")


def check_dir(path: Path) -> None:
    """The dump directory exists, is a real directory and is writable."""
    if path.is_symlink():
        raise CollectorError(f"{path}: is a symbolic link; refusing to write dumps through it")
    if not path.is_dir():
        raise CollectorError(f"{path}: no such directory for the dumps")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CollectorError(f"{path}: not writable")


def watch(req: WatchRequest) -> None:
    """Attach the probes and watch until SIGINT/SIGTERM."""
    from lktrace.collector.bpf import check_privileges

    check_privileges()
    check_dir(req.dir)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until armed: just stop
    syms = load_symbols()
    opened, targets = open_source(req, syms)
    extra = dict(opened.extra)
    if opened.backend != "tracepoint":
        extra["missing_probes"] = json.dumps(targets.missing)
    meta = start_meta(req, opened.backend, opened.probes, extra)
    Watcher(opened.source, syms, meta, req).run()


class Watcher:
    """The watch loop: drain into the ring, look at stuck tasks, write findings."""

    def __init__(
        self,
        source: EventSource,
        syms: Kallsyms,
        meta: TraceMeta,
        req: WatchRequest,
        kmsg: Path = KMSG,
        log: TextIO | None = None,
    ) -> None:
        for module in ("lktrace.replay.analyze", "lktrace.replay.render"):
            importlib.import_module(module)  # now, not when the machine hangs
        steady_malloc()

        self.source, self.meta, self.req = source, meta, req
        self.log = log or sys.stderr
        max_bytes = req.max_mb << 20
        self.ring = Ring(int(req.keep_s * 1e9), max_bytes, meta.extra.get("releases") != "no")
        # batches small next to the bound, so that evicting whole ones keeps to it
        self.drain = Drain(source, self.ring, syms, max_buffer=min(32 << 20, max_bytes // 8))
        self.dumps = Dumps(req.dir, kmsg, self.log)
        self.reported: dict[str, set[tuple[int, int, int]]] = {k: set() for k in REASONS}
        self.findings = 0
        self._next_check = time.monotonic()
        self._checked_ns = time.monotonic_ns()
        self._next_status = time.monotonic() + 60
        self._snapshot = False
        self.started = time.monotonic()

    def run(self, stop: Callable[[], bool] | None = None) -> None:
        """Watch until SIGINT/SIGTERM (or ``stop()``), then finish the dumps queued."""
        flag = StopFlag(None, None)
        handlers = {signal.SIGINT: flag.handler, signal.SIGTERM: flag.handler,
                    signal.SIGUSR1: self._want_snapshot}  # fmt: skip
        old = {s: signal.signal(s, h) for s, h in handlers.items()}
        r = self.req
        print(
            f"lktrace: watching with {self.meta.extra.get('backend')} ({len(self.meta.probes)} "
            f"probes), keeping {r.keep_s:g} s / {r.max_mb} MiB in memory, stuck after "
            f"{r.stuck_s:g} s (long waits {r.stuck_hard_s:g} s); dumps go to {r.dir}; "
            "SIGUSR1 writes a snapshot, Ctrl-C or SIGTERM stops",
            file=self.log,
            flush=True,
        )
        try:
            self.drain.run(lambda: flag() or (stop is not None and stop()), self.tick)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.source.close()
            self.dumps.close()
        p = self.drain.progress
        print(
            f"lktrace: stopped after {p.elapsed_ns / 1e9:.0f} s: {fmt_count(p.events)} events, "
            f"{fmt_count(p.lost)} lost, {self.findings} finding(s) written",
            file=self.log,
            flush=True,
        )

    def _want_snapshot(self, _signum: int, _frame: object) -> None:
        self._snapshot = True

    def tick(self, progress: Progress) -> None:
        """After each flush: a snapshot if asked, the stuck tasks once a second."""
        now = time.monotonic()
        if self._snapshot:
            self._snapshot = False
            self.write("snapshot", None, time.monotonic_ns())
        now_ns = time.monotonic_ns()
        if now >= self._next_check or self._crossed(now_ns):
            self._next_check = now + CHECK_EVERY
            self._checked_ns = now_ns
            try:
                self.check(now_ns)
            except Exception as e:  # a flight recorder keeps recording: say it, go on
                print(f"lktrace: looking at stuck tasks failed: {e!r}", file=self.log, flush=True)
        if now >= self._next_status:
            self._next_status = now + 600
            first = self.ring.first_ns
            span = (self.ring.last_ns - first) / 1e9 if first is not None else 0.0
            print(
                f"lktrace: watching {now - self.started:.0f} s: {fmt_count(progress.events)} "
                f"events, {fmt_count(progress.lost)} lost; ring {self.ring.size / 2**20:.1f} "
                f"of {self.req.max_mb} MiB, "
                f"{fmt_count(self.ring.events)} events over {span:.0f} s",
                file=self.log,
                flush=True,
            )

    def _crossed(self, now_ns: int) -> bool:
        """Whether an attempt became stuck since the last check (so that it is looked at
        on this flush, not up to a second later)."""
        stuck_ns = int(self.req.stuck_s * 1e9)
        ts = self.ring.state.waiting["ts_ns"]
        late = pc.and_(
            pc.greater(ts, self._checked_ns - stuck_ns), pc.less_equal(ts, now_ns - stuck_ns)
        )
        return bool(pc.any(late).as_py())

    def stuck(self, now_ns: int) -> list[Wait]:
        """Tasks whose blocking attempt is pending for longer than ``--stuck`` (and, as far
        as the BPF side knows, still are)."""
        w = self.ring.state.waiting
        w = w.filter(pc.less_equal(w["ts_ns"], now_ns - int(self.req.stuck_s * 1e9)))
        cols = {c: w[c].to_pylist() for c in ("tid", "comm", "lock_addr", "lock_class",
                                              "lock_name", "ts_ns", "caller")}  # fmt: skip
        waits = [Wait(*row) for row in zip(*cols.values(), strict=True)]
        # an answer whose record was lost leaves an attempt open in the ring: the
        # kernel side's per-task state says whether the task is still in a lock call
        calling = self.source.in_flight([w.tid for w in waits]) if waits else {}
        return [w for w in waits if calling.get(w.tid, True)]

    def holders(self, stuck: list[Wait]) -> dict[int, list[Holder]]:
        """Who holds each lock the stuck tasks wait for: the ring's open holds (with where
        and when they were taken), and the BPF held map (the kernel side's own record,
        which also knows holds whose events were lost or left the ring)."""
        locks = np.array(sorted({w.lock for w in stuck}), dtype=np.uint64)
        comm = {w.tid: w.comm for w in stuck}
        found: dict[int, dict[int, Holder]] = {int(lock): {} for lock in locks}
        h = self.ring.state.holders(locks)
        for tid, c, lock, ts, caller in zip(*(h[k].to_pylist() for k in (
                "tid", "comm", "lock_addr", "ts_ns", "caller")), strict=True):  # fmt: skip
            found[lock][tid] = Holder(tid, c, ts, caller)
        held = self.source.held()
        if held is not None:
            for row in held[np.isin(held["lock"], locks)].tolist():
                tid, lock = int(row[0]), int(row[1])
                was = found[lock].get(tid) or Holder(tid, comm.get(tid, ""))
                found[lock][tid] = Holder(was.tid, was.comm, was.since_ns, was.caller, True)
        return {lock: list(by_tid.values()) for lock, by_tid in found.items()}

    def check(self, now_ns: int) -> list[Finding]:
        """Look at the stuck tasks; write each finding not written before."""
        stuck = self.stuck(now_ns)
        if not stuck:
            return []
        new = []
        hard = int(self.req.stuck_hard_s * 1e9)
        for f in find(stuck, self.holders(stuck), now_ns, hard):
            done = self.reported[f.kind]
            if f.key <= done:
                continue
            done |= f.key
            new.append(f)
            self.write(f.kind, f, now_ns)
        return new

    def write(self, kind: str, finding: Finding | None, now_ns: int) -> None:
        """Say it on stderr and in the kernel log now; queue the text and the trace."""
        table, pinned = self.ring.snapshot()
        path = self.dumps.name(kind)
        if finding is not None:
            self.findings += 1
            self.dumps.announce(f"{finding.line(now_ns)}; evidence in {path}")
        meta = copy.copy(self.meta)
        meta.stacks = list(self.drain.decoder.stacks.stacks)
        meta.lost_events = self.drain.source.lost
        meta.extra = {**self.meta.extra, **overflows(self.drain)}
        first = self.ring.first_ns
        meta.extra.update(
            {
                "watch_reason": REASONS[kind],
                "watch_stuck": json.dumps(finding.to_json(now_ns) if finding else []),
                "watch_window": json.dumps(
                    {
                        "first_ns": first,
                        "last_ns": self.ring.last_ns,
                        "written_ns": now_ns,
                        "keep_s": self.req.keep_s,
                        "max_mb": self.req.max_mb,
                        "events_evicted": self.ring.evicted,
                        "rows_from_before": pinned,
                    }
                ),
                "watch_stuck_after_s": f"{self.req.stuck_s:g}",
            }
        )
        if first is not None:
            meta.duration_ns = self.ring.last_ns - first
        lines = [REASONS[kind]]
        if finding is not None:
            lines = [finding.line(now_ns)]
            lines += [f"  {k}: {v}" for k, v in _stuck_lines(finding, now_ns)]
        self.dumps.put(path, table, meta, lines)


def _stuck_lines(f: Finding, now_ns: int) -> list[tuple[str, str]]:
    """The stuck tasks, one line each: who, on what, since when, held by whom."""
    rows = []
    for role, waits in (("stuck", f.waits), ("behind it", f.behind)):
        for w in waits:
            held = ", ".join(_holder_text(h) for h in f.holders.get(w.lock, [])) or "unknown"
            rows.append(
                (
                    role,
                    f"{w.label()} waits for {w.lock_label()} at {w.caller} since "
                    f"{w.since_ns / 1e9:.6f} ({(now_ns - w.since_ns) / 1e9:.1f} s), "
                    f"held by {held}",
                )
            )
    return rows


def _holder_text(h: Holder) -> str:
    where = (
        f" (taken at {h.caller} at {h.since_ns / 1e9:.6f})"
        if h.since_ns is not None
        else " (taken before the watch window: known from the held map)"
    )
    return h.label() + where


class Dumps:
    """Writes findings into the dump directory on a thread, one at a time: the text
    (analyze's report) first, then the trace, each created safely (no link followed,
    nothing overwritten, owned by the sudo user)."""

    def __init__(self, directory: Path, kmsg: Path, log: TextIO) -> None:
        self.dir, self.kmsg, self.log = directory, kmsg, log
        self.written: list[Path] = []
        self._names: set[str] = set()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lktrace-dumps", daemon=True)
        self._thread.start()

    def name(self, kind: str) -> Path:
        """A new dump name: ``<kind>-<UTC time>.parquet``."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base, n = f"{kind}-{stamp}", 1
        while base in self._names or (self.dir / f"{base}.parquet").exists():
            n += 1
            base = f"{kind}-{stamp}-{n}"
        self._names.add(base)
        return self.dir / f"{base}.parquet"

    def announce(self, line: str) -> None:
        """One line on stderr and in the kernel log (``/dev/kmsg``, priority err)."""
        print(f"lktrace: {line}", file=self.log, flush=True)
        text = f"<3>lktrace: {line}"
        if len(text) > KMSG_MAX:
            text = text[: KMSG_MAX - 3] + "..."
        try:
            with self.kmsg.open("w") as k:
                k.write(text + "\n")
        except OSError as e:
            print(f"lktrace: cannot write to {self.kmsg}: {e.strerror}", file=self.log, flush=True)

    def put(self, path: Path, table: pa.Table, meta: TraceMeta, header: list[str]) -> None:
        self._queue.put((path, table, meta, header))

    def close(self) -> None:
        """Finish the dumps queued."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            path = job[0]
            try:
                self._write(*job)
            except (OSError, pa.ArrowException, CollectorError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                print(f"lktrace: writing {path} failed: {why}", file=self.log, flush=True)
            del job  # the snapshot holds batches the ring has let go of since
            release_memory()

    def _write(self, path: Path, table: pa.Table, meta: TraceMeta, header: list[str]) -> None:
        """The trace is written (privately) while the text is made; the text is put in
        place first, then the trace."""
        table = conform(table, path).unify_dictionaries()
        owner = output.invoking_owner()
        work = output.private_dir(path)
        try:
            f, part = output.open_private(work, "trace.parquet")
            failed: list[BaseException] = []

            def write_trace() -> None:
                try:
                    with TraceWriter(path, sink=f) as w:
                        w.write(table)
                        w.close(meta)
                except BaseException as e:  # re-raised below, in the dump thread
                    failed.append(e)

            writer = threading.Thread(target=write_trace, name="lktrace-dump-trace")
            writer.start()
            text = "\n".join(header) + "\n\n" + analyze_text(Trace(path, table, meta))
            txt = path.with_suffix(".txt")
            output.create_into(txt, work, lambda t: t.write(text.encode()), False, owner)
            self.written.append(txt)
            writer.join()
            if failed:
                f.close()
                raise failed[0]
            output.place(f, part, path, False, owner)
            self.written.append(path)
        finally:
            output.remove_dir(work)
        print(f"lktrace: wrote {path} ({table.num_rows:,} events) and {txt.name}",
              file=self.log, flush=True)  # fmt: skip


#: glibc's mallopt() parameter of the size from which malloc maps memory of its own.
M_MMAP_THRESHOLD = -3


def steady_malloc() -> None:
    """With glibc, serve large allocations (batches' columns) by mmap at any time, so
    that they go back to the system when freed. By default glibc raises this threshold
    after freeing a large block, and the batches of days of watching then fragment the
    heap instead (RSS creeps up after each dump)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 256 << 10)


def release_memory() -> None:
    """Give what analysing a dump took back to the system: Arrow's pool and, with glibc,
    malloc's free arenas (freed memory stays in the process otherwise, and a watch
    that ran for days would carry the peak of its largest dump)."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def analyze_text(trace: Trace) -> str:
    """What ``lktrace analyze`` prints for ``trace`` (its public entry and renderer)."""
    from rich.console import Console

    from lktrace.replay.analyze import analyze
    from lktrace.replay.render import render

    buf = io.StringIO()
    render(analyze([trace]), Console(file=buf, width=160, highlight=False, no_color=True))
    return buf.getvalue()
