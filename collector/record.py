"""``lktrace record`` and ``lktrace recover``: from checks and probes to a finished trace."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from lktrace.collector import output
from lktrace.collector.errors import CollectorError
from lktrace.collector.pipeline import Drain, EventSource, Progress
from lktrace.collector.spool import EVENTS_FILE, SPOOL_SUFFIX, SpoolWriter, convert, spool_path
from lktrace.collector.stream import TraceStream
from lktrace.console import fmt_count
from lktrace.options import Backend, values
from lktrace.probes.btf import VMLINUX_BTF, Btf, BtfError
from lktrace.probes.kallsyms import Kallsyms
from lktrace.probes.program import Options
from lktrace.probes.targets import CONTENTION_TRACEPOINTS, Targets, discover, fentry_possible
from lktrace.trace import TraceMeta

BACKENDS = values(Backend)


@dataclass
class RecordRequest:
    """The command line of ``lktrace record``."""

    output: Path
    duration: float | None = None
    scope: str = "pci"
    stacks: bool = True
    pid: int | None = None
    comm: str | None = None
    backend: str = "auto"
    force: bool = False
    buffer_mb: int = 16
    command: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)


def buffer_pages(mb: int) -> int:
    """Pages of a ring buffer of at least ``mb`` MiB (the kernel wants a power of two)."""
    pages = max(1, mb) * (1 << 20) // mmap.PAGESIZE
    return 1 << (pages - 1).bit_length()


@dataclass
class Opened:
    """An attached source and what to say about it in the metadata."""

    source: EventSource
    backend: str
    probes: list[str]
    extra: dict[str, str]


def open_source(req: RecordRequest, syms: Kallsyms) -> tuple[Opened, Targets]:
    """Check the kernel, choose the backend and attach (BCC is imported only here)."""
    from lktrace.collector import bpf

    bpf.import_bcc()
    try:
        btf = Btf.load() if VMLINUX_BTF.exists() else None
    except BtfError:
        btf = None
    targets = discover(syms, btf)
    opts = Options(
        stacks=req.stacks,
        scope_all=req.scope == "all",
        pid=req.pid,
        comm=req.comm,
        ringbuf=targets.ringbuf,
        ringbuf_pages=buffer_pages(req.buffer_mb),
    )
    layout_free = targets.device_offsets_known
    headers = bpf.find_headers(os.uname().release, layout_free)
    extra = {
        "headers": headers.note,
        "buffer": "ring buffer" if opts.ringbuf else "perf buffer",
        "device_offsets": "BTF" if layout_free else "kernel headers",
    }
    if req.backend == "tracepoint":
        source = bpf.open_contention(targets, opts, headers)
        extra |= {"releases": "no", "scope": "all contended mutexes and rwsems"}
        return Opened(source, "tracepoint", list(CONTENTION_TRACEPOINTS), extra), targets
    extra |= {"releases": "yes", "scope": req.scope}
    want_fentry = req.backend == "fentry" or (
        req.backend == "auto" and fentry_possible(targets, btf) and bpf.fentry_supported()
    )
    if want_fentry:
        try:
            source, probes = bpf.open_lock_probes(targets, opts, headers, fentry=True)
            return Opened(source, "fentry", probes, extra), targets
        except CollectorError as e:
            if req.backend == "fentry":
                raise
            extra["fentry"] = f"not used: {e}"
    if not bpf.kprobes_available():
        raise CollectorError(
            "this kernel has no kprobes (CONFIG_KPROBES off) and fentry is not allowed: "
            "use --backend tracepoint (contended acquisitions only)"
        )
    source, probes = bpf.open_lock_probes(targets, opts, headers, fentry=False)
    return Opened(source, "kprobe", probes, extra), targets


class StopFlag:
    """Set by SIGINT/SIGTERM, a duration or the end of the recorded command."""

    def __init__(self, duration: float | None, child: subprocess.Popen | None) -> None:
        self.signal: int | None = None
        self.deadline = time.monotonic() + duration if duration else None
        self.child = child

    def handler(self, signum: int, _frame: object) -> None:
        if self.signal is not None:  # asked twice: give up now, the spool stays
            raise KeyboardInterrupt
        self.signal = signum

    def __call__(self) -> bool:
        return (
            self.signal is not None
            or (self.deadline is not None and time.monotonic() >= self.deadline)
            or (self.child is not None and self.child.poll() is not None)
        )


class Status:
    """The live status line: rewritten in place on a terminal, else a line every 10 s."""

    def __init__(self, tty: bool, every: float = 10.0) -> None:
        self.tty = tty
        self.every = every
        self._next = time.monotonic() + every

    def __call__(self, p: Progress) -> None:
        if not self.tty:
            if time.monotonic() < self._next:
                return
            self._next += self.every
        secs = p.elapsed_ns / 1e9
        rate = p.events / secs if secs else 0.0
        text = (
            f"recording {secs:6.1f} s  {fmt_count(p.events)} events  {rate:,.0f}/s  "
            f"lost {fmt_count(p.lost)}  spool {p.spool_bytes / 1e6:.1f} MB"
        )
        sys.stderr.write(f"\r\033[K{text}" if self.tty else f"lktrace: {text}\n")
        sys.stderr.flush()


def record(req: RecordRequest) -> tuple[TraceMeta, int]:
    """Run a recording to completion; returns the trace's metadata and event count."""
    from lktrace.collector.bpf import check_privileges

    check_privileges()
    # until the drain runs, SIGTERM aborts like Ctrl-C: clean up, write nothing
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = prepare_output(req.output, req.force)
    try:
        syms = Kallsyms.load()
        if syms.zeroed:
            raise CollectorError(
                "/proc/kallsyms shows no addresses (kernel.kptr_restrict=2?): run as root "
                "with 'sysctl kernel.kptr_restrict=1'"
            )
        opened, targets = open_source(req, syms)
    except BaseException:
        output.remove_dir(work)  # failed before recording: leave nothing behind
        raise
    extra = dict(opened.extra)
    if opened.backend != "tracepoint":
        extra["missing_probes"] = json.dumps(targets.missing)
    meta = start_meta(req, opened.backend, opened.probes, extra)
    return run_recording(opened.source, syms, meta, work, req)


def prepare_output(out: Path, force: bool) -> Path:
    """Check ``out`` and make its spool directory (a stale one only goes with ``force``)."""
    output.check_target(out, force)
    spool_dir = spool_path(out)
    if spool_dir.exists() or spool_dir.is_symlink():
        if not force:
            raise CollectorError(
                f"{spool_dir}: a spool from an earlier recording is there: "
                f"'lktrace recover {spool_dir} -o {out}', or --force to discard it"
            )
        output.remove_dir(spool_dir)
    return output.private_dir(out, spool_dir.name)


def start_meta(
    req: RecordRequest, backend: str, probes: list[str], extra: dict[str, str]
) -> TraceMeta:
    """The metadata known when recording starts."""
    uname = os.uname()
    meta = TraceMeta(
        kernel=uname.release,
        kernel_version=uname.version,
        host=socket.gethostname(),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        probes=probes,
        command=" ".join(req.argv),
        extra={"backend": backend, "stacks_recorded": "yes" if req.stacks else "no", **extra},
    )
    if req.pid is not None:
        meta.extra["filter_pid"] = str(req.pid)
    if req.comm:
        meta.extra["filter_comm"] = req.comm
    return meta


class Recording:
    """One recording in its work directory: the spool (for crashes), the trace written
    as it goes, and the drain feeding both."""

    def __init__(
        self,
        source: EventSource,
        syms: Kallsyms,
        meta: TraceMeta,
        work: Path,
        out: Path,
        force: bool,
    ) -> None:
        self.source, self.meta, self.work, self.out, self.force = source, meta, work, out, force
        self.spool = SpoolWriter(work, meta)
        self._file, self._part = output.open_private(work, "trace.parquet.part")
        self.stream = TraceStream(out, self._file)
        self.drain = Drain(source, self.spool, syms, self.stream)

    def finish(self, extra: dict[str, str]) -> tuple[TraceMeta, int]:
        """Flush, close the source, complete the trace at ``out`` and drop the spool."""
        progress = self.drain.progress
        decoder = self.drain.decoder
        counters = self.source.counters()
        extra = {
            "stack_errors": str(decoder.stack_errors),
            "task_state_full": str(counters.get("state_full", 0)),
            "held_map_full": str(counters.get("held_full", 0)),
            **extra,
        }
        empty = decoder.decode(b"", progress.events)
        self.spool.append(empty, [], progress.lost, progress.elapsed_ns, extra)
        self.close()
        meta = self.meta
        meta.stacks = decoder.stacks.stacks
        meta.lost_events = progress.lost
        meta.duration_ns = progress.elapsed_ns
        meta.extra.update(extra)
        rows = self.stream.close(meta)
        output.place(self._file, self._part, self.out, self.force, output.invoking_owner())
        output.remove_dir(self.work)
        return meta, rows

    def close(self) -> None:
        """Detach the probes and close the spool (what is in it stays recoverable, even
        when its end-of-stream marker cannot be written: a full disk)."""
        self.source.close()
        with contextlib.suppress(OSError, pa.ArrowException):
            self.spool.close()


def run_recording(
    source: EventSource, syms: Kallsyms, meta: TraceMeta, work: Path, req: RecordRequest
) -> tuple[TraceMeta, int]:
    """Drain ``source`` until told to stop, then write the trace at ``req.output``."""
    try:
        rec = Recording(source, syms, meta, work, req.output, req.force)
    except (OSError, pa.ArrowException) as e:
        source.close()
        output.remove_dir(work)
        raise CollectorError(f"cannot write to {work}: {e}") from e
    try:
        child = subprocess.Popen(req.command) if req.command else None
    except OSError as e:
        rec.close()
        output.remove_dir(work)
        raise CollectorError(f"cannot run {req.command[0]}: {e.strerror}") from e
    stop = StopFlag(req.duration, child)
    old = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    print(
        f"lktrace: recording with {meta.extra.get('backend')} ({len(meta.probes)} probes) "
        f"into {req.output}; Ctrl-C or SIGTERM stops",
        file=sys.stderr,
        flush=True,
    )
    tty = sys.stderr.isatty()
    try:
        rec.drain.run(stop, Status(tty))
    except BaseException as e:
        rec.close()
        raise _kept(e, work) from e
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if tty:
            sys.stderr.write("\n")
    extra = {}
    if stop.signal is not None:
        extra["stopped_by"] = signal.Signals(stop.signal).name
    if child is not None and child.returncode is not None:
        extra["command_exit"] = str(child.returncode)
    try:
        return rec.finish(extra)
    except (OSError, pa.ArrowException) as e:
        raise _kept(e, work) from e


def _kept(e: BaseException, work: Path) -> BaseException:
    """A write failure (disk full, I/O error) or a second interrupt as one line saying
    where the flushed events are."""
    if isinstance(e, KeyboardInterrupt):
        return CollectorError(
            f"interrupted; what was flushed is in {work}: 'lktrace recover {work}'"
        )
    if not isinstance(e, (OSError, pa.ArrowException)):
        return e
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
    return CollectorError(
        f"writing the trace failed ({why}); what was flushed is in {work}: "
        f"'lktrace recover {work}' once there is room"
    )


def finish_spool(spool_dir: Path, out: Path, force: bool) -> tuple[TraceMeta, int]:
    """Turn a spool left behind into the trace at ``out`` (owned by the sudo user)."""
    result: list[tuple[TraceMeta, int]] = []
    work = output.private_dir(out)
    try:
        output.create_into(
            out,
            work,
            lambda f: result.append(convert(spool_dir, out, f)),
            force,
            output.invoking_owner(),
        )
    finally:
        output.remove_dir(work)
    return result[0]


def recover(spool_dir: Path, out: Path | None, force: bool) -> tuple[TraceMeta, int, Path]:
    """``lktrace recover``: the trace a killed recording left in its spool."""
    if not (spool_dir / EVENTS_FILE).is_file():
        raise CollectorError(f"{spool_dir}: not a spool directory (no {EVENTS_FILE})")
    if out is None:
        if spool_dir.name.endswith(SPOOL_SUFFIX):
            out = spool_dir.with_name(spool_dir.name[: -len(SPOOL_SUFFIX)])
        else:
            raise CollectorError(f"{spool_dir}: give the trace to write with -o")
    output.check_target(out, force)
    meta, rows = finish_spool(spool_dir, out, force)
    return meta, rows, out
