"""The recorder against this machine's kernel: probe discovery, BTF, the BPF programs
through BCC's compiler and the kernel's verifier, the tracepoint backend end to end on
real mutex contention, and the one-line errors. Skips say what the machine lacks."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lktrace.collector import bpf
from lktrace.collector.errors import CollectorError
from lktrace.collector.events import Decoder
from lktrace.collector.spool import spool_path
from lktrace.probes import program
from lktrace.probes.btf import VMLINUX_BTF, Btf
from lktrace.probes.kallsyms import Kallsyms
from lktrace.probes.targets import LOCK_APIS, discover
from lktrace.trace import Trace, read_trace
from lktrace.version import writer

LKTRACE = [sys.executable, "-m", "lktrace"]
#: The hammer's comm, inherited by its children.
HAMMER_COMM = "lkt-hammer"
HAMMER = f"""
import os, sys, time
# 6 writer and 2 reader processes on one pipe: its mutex is contended; the comm
# (inherited by the children) tells their events from the rest of the machine's
with open("/proc/self/comm", "w") as f:
    f.write("{HAMMER_COMM}")
r, w = os.pipe()
stop = time.monotonic() + float(sys.argv[1])
kids = []
for role in "wwwwwwrr":
    pid = os.fork()
    if pid == 0:
        if role == "w":
            while time.monotonic() < stop:
                os.write(w, b"x" * 4096)
        else:
            os.close(w)
            while os.read(r, 65536):
                pass
        os._exit(0)
    kids.append(pid)
os.close(w)
os.close(r)
for pid in kids:
    os.waitpid(pid, 0)
"""


def root(test):
    """A test that needs root and this kernel's BPF (marker ``root``)."""
    return pytest.mark.root(pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")(test))


needs_btf = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no BTF")


def bcc_or_skip():
    try:
        return bpf.import_bcc()
    except CollectorError as e:
        pytest.skip(str(e))


def headers_or_skip() -> bpf.Headers:
    try:
        return bpf.find_headers(os.uname().release, layout_free=True)
    except CollectorError as e:
        pytest.skip(str(e))


@needs_btf
def test_btf_offsets_of_known_layouts():
    btf = Btf.load()
    assert btf.offsetof("list_head", "prev") == 8
    assert btf.offsetof("device", "kobj.name") == 0  # kobj first, name first in kobject
    assert btf.offsetof("device", "mutex") > btf.offsetof("device", "bus") > 0
    assert "mutex_lock" in btf.functions


@needs_btf
def test_discover_this_kernel():
    syms = Kallsyms.load()
    if syms.zeroed:
        pytest.skip("/proc/kallsyms addresses are hidden (not root?)")
    targets = discover(syms, Btf.load())
    names = [a.name for a in targets.apis]
    assert "mutex_unlock" in names
    assert any(n.startswith("mutex_lock") or n.startswith("_mutex_lock") for n in names)
    every = {a.name for a in LOCK_APIS}
    assert set(names) - {"pci_lock_rescan_remove", "pci_unlock_rescan_remove"} <= every
    assert not set(names) & {m.split()[0] for m in targets.missing}
    assert {"mutex", "bus", "name", "bus_name"} <= targets.offsets.keys()


def _compile(fentry: bool, **opts):
    bcc = bcc_or_skip()
    headers = headers_or_skip()
    syms = Kallsyms.load()
    targets = discover(syms, Btf.load())
    options = program.Options(**opts)
    text, attach = program.lock_program(targets, options, fentry=fentry)
    flags = program.cflags(options, targets)
    return bcc, bpf.load(bcc, text, flags, headers), attach


@root
@needs_btf
@pytest.mark.parametrize(
    "opts",
    [{}, {"stacks": False}, {"pid": 1, "comm": "udevd"}, {"ringbuf": False, "scope_all": True}],
    ids=["stacks", "no-stacks", "filters", "perfbuf-all"],
)
def test_kprobe_program_compiles_and_passes_the_verifier(opts):
    bcc, b, attach = _compile(False, **opts)
    try:
        for _kind, _func, fn in attach:  # load each program into the kernel, no attach
            assert b.load_func(fn.encode(), bcc.BPF.KPROBE).fd >= 0
    finally:
        b.cleanup()


@root
@needs_btf
def test_fentry_program_compiles():
    # BCC attaches KFUNC_PROBE programs while loading; where the kernel refuses fentry
    # (lockdown) that is a load error, never a compile error.
    try:
        _bcc, b, _ = _compile(True)
    except CollectorError as e:
        assert "error:" not in str(e), e
    else:
        b.cleanup()


def test_bcc_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(bpf, "DIST_PACKAGES", tmp_path)
    monkeypatch.delitem(sys.modules, "bcc", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "dist-packages" not in p])
    with pytest.raises(CollectorError, match="apt install python3-bpfcc"):
        bpf.import_bcc()


def test_headers_missing_names_the_package(tmp_path):
    with pytest.raises(CollectorError, match=r"apt install linux-headers-9\.9\.9-test"):
        bpf.find_headers("9.9.9-test", layout_free=False, modules=tmp_path)
    # a program with BTF offsets can use another kernel's generic headers
    (tmp_path / "6.1.0-1-amd64" / "build").mkdir(parents=True)
    (tmp_path / "6.1.0-1-amd64" / "source").mkdir()
    h = bpf.find_headers("9.9.9-test", layout_free=True, modules=tmp_path)
    assert h.env["BCC_KERNEL_SOURCE"].endswith("6.1.0-1-amd64/source")
    assert "not the running kernel" in h.note


def test_privileges_are_checked(tmp_path):
    status = tmp_path / "status"
    status.write_text("CapEff:\t0000000000000000\n")
    with pytest.raises(CollectorError, match="CAP_BPF"):
        bpf.check_privileges(status)
    status.write_text(f"CapEff:\t{(1 << 38 | 1 << 39):016x}\n")
    bpf.check_privileges(status)  # CAP_BPF + CAP_PERFMON suffice


def test_sudo_hint_says_how_sudo_finds_this_lktrace(tmp_path, monkeypatch):
    script = tmp_path / "venv/bin/lktrace"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    sudo_path = tmp_path / "usr/local/bin"
    sudo_path.mkdir(parents=True)
    monkeypatch.setattr(bpf, "SUDO_PATH", str(sudo_path))
    hint = bpf.sudo_hint(str(script))
    assert hint == (
        f"; sudo's PATH has no lktrace: sudo {script} record ..., "
        f"or link it once: sudo ln -sf {script} /usr/local/bin/lktrace"
    )
    script.chmod(0o755)
    (sudo_path / "lktrace").symlink_to(script)  # what the README's link does
    assert bpf.sudo_hint(str(script)) == ""


def run_cli(
    *args: str, cwd: Path, user: list[str] | None = None, memory: int | None = None
) -> subprocess.CompletedProcess:
    def limit() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [*(user or []), *LKTRACE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )


@root
@pytest.mark.skipif(bpf.kprobes_available(), reason="this kernel has kprobes")
def test_kernel_without_kprobes_suggests_the_tracepoint_backend(tmp_path):
    bcc_or_skip()
    out = tmp_path / "t.parquet"
    done = run_cli("record", "--backend", "kprobe", "-o", str(out), "--duration", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lktrace: this kernel has no kprobes (CONFIG_KPROBES off) and fentry is not allowed: "
        "use --backend tracepoint (contended acquisitions only)"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_no_bpf_capabilities_is_one_line(tmp_path):
    no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    done = run_cli("record", "-o", str(tmp_path / "t.parquet"), cwd=tmp_path, user=no_caps)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lktrace: recording needs root or CAP_BPF+CAP_PERFMON: run it with sudo "
        f"(sudo {sys.executable} -m lktrace record ...)"
    )
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_one_line(tmp_path):
    done = run_cli("record", "-o", "/proc/lktrace-test.parquet", "--duration", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "lktrace: cannot write to /proc/lktrace-test.parquet.spool: " + (
        os.strerror(2) if not Path("/proc").is_dir() else done.stderr.split(": ")[-1].strip()
    )


def tracepoints_or_skip() -> None:
    """What the tracepoint backend needs: bcc, headers, tracefs, lock:contention_*."""
    bcc_or_skip()
    headers_or_skip()
    try:
        bpf.mount_tracefs()
    except CollectorError as e:
        pytest.skip(str(e))
    if not Path("/sys/kernel/tracing/events/lock/contention_begin").is_dir():
        pytest.skip("kernel has no lock:contention_begin (v5.19+)")


def record_hammer(tmp_path: Path, name: str, *args: str) -> Path:
    """``lktrace record --backend tracepoint ARGS -- python hammer.py 2``; the trace."""
    tracepoints_or_skip()
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    out = tmp_path / name
    cmd = ["record", "--backend", "tracepoint", "-o", str(out), *args]
    done = run_cli(*cmd, "--", sys.executable, str(script), "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return out


def contended(tmp_path: Path, name: str, *args: str) -> tuple[Path, Trace]:
    """A hammer recording with at least 10 pipe_write events: how often the writers meet
    on the pipe's mutex depends on what else the CPUs run, so up to three tries."""
    for attempt in range(3):
        out = record_hammer(tmp_path, f"{name}{attempt}.parquet", *args)
        trace = read_trace(out)
        if len(hammer_pipe_writes(trace.table.to_pylist())) >= 10:
            break
    return out, trace


def hammer_pipe_writes(rows: list[dict]) -> list[dict]:
    """The hammer's mutex_lock events in pipe_write (not the machine's other pipes')."""
    return [
        r
        for r in rows
        if r["comm"] == HAMMER_COMM and "pipe_write" in r["caller"] and r["api"] == "mutex_lock"
    ]


@root
def test_tracepoint_backend_records_real_contention(tmp_path):
    out, trace = contended(tmp_path, "pipe")
    meta = trace.meta
    assert meta.extra["backend"] == "tracepoint" and meta.extra["releases"] == "no"
    assert meta.extra["writer"] == writer()
    assert meta.probes == ["lock:contention_begin", "lock:contention_end"]
    assert meta.kernel == os.uname().release and meta.duration_ns > 1e9
    assert meta.extra["command_exit"] == "0"
    rows = trace.table.to_pylist()
    pipe = hammer_pipe_writes(rows)
    assert len(pipe) >= 10, {(r["comm"], r["lock_class"]) for r in rows}
    assert {r["event"] for r in pipe} == {"attempt", "acquired"}
    assert {r["lock_class"] for r in pipe} <= {"mutex@pipe_write", "mutex@anon_pipe_write"}
    assert len({r["lock_addr"] for r in pipe}) == 1  # the one pipe's mutex
    frames = trace.stack(pipe[0]["stack_id"])
    assert "pipe_write" in frames[1] and "mutex_lock" in frames[0]
    assert not spool_path(out).exists()
    # the first 0.1 s and at most 4 GB: a no-release trace of 10^5 events made analyze
    # (replay/) grow past 20 GB here
    analyzed = run_cli("analyze", "--until", "0.1", str(out), cwd=tmp_path, memory=4 << 30)
    assert analyzed.returncode in (0, 1), analyzed.stderr
    assert "no release events" in analyzed.stdout


@root
def test_comm_filter_in_bpf(tmp_path):
    comm = HAMMER_COMM
    other = read_trace(record_hammer(tmp_path, "other.parquet", "--comm", "no-such-task"))
    assert other.num_events == 0 and other.meta.extra["filter_comm"] == "no-such-task"
    _, mine = contended(tmp_path, "mine", "--comm", comm)
    assert mine.num_events >= 10
    assert set(mine.table["comm"].cast("string").to_pylist()) == {comm}


def contention_source(tmp_path: Path, opts: program.Options) -> tuple[bpf.BccSource, Decoder, Path]:
    """The tracepoint program attached with ``opts``, a decoder for it, the hammer script."""
    tracepoints_or_skip()
    headers = headers_or_skip()
    syms = Kallsyms.load()
    source = bpf.open_contention(discover(syms, Btf.load()), opts, headers)
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    return source, Decoder(syms, source.apis, source.stack_lookup), script


@root
@needs_btf
def test_perf_buffer_path_on_real_contention(tmp_path):
    # kernels before v5.8 get a perf buffer; this one has both, so try it here
    source, decoder, script = contention_source(tmp_path, program.Options(ringbuf=False))
    try:
        rows = 0
        for _ in range(3):  # contention depends on what else the CPUs run
            hammer = subprocess.Popen([sys.executable, str(script), "1"])
            while hammer.poll() is None:
                source.poll(100)
            source.poll(0)
            table = decoder.decode(source.take(), rows)
            rows += table.num_rows
            if rows >= 10:
                break
    finally:
        source.close()
    assert rows >= 10
    assert set(table["event"].cast("string").to_pylist()) <= {"attempt", "acquired", "failed"}


@root
def test_sigterm_stops_a_real_recording(tmp_path):
    tracepoints_or_skip()
    out = tmp_path / "t.parquet"
    proc = subprocess.Popen(
        [*LKTRACE, "record", "--backend", "tracepoint", "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "Ctrl-C or SIGTERM stops" in proc.stderr.readline()  # probes are attached
    proc.terminate()
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, stderr
    trace = read_trace(out)
    assert trace.meta.extra["stopped_by"] == "SIGTERM"
    assert not spool_path(out).exists()


@root
@needs_btf
def test_ring_buffer_read_in_bulk_across_wraparound(tmp_path):
    # a 64 KiB ring wraps every ~600 records: every record read must still be whole
    source, decoder, script = contention_source(tmp_path, program.Options(ringbuf_pages=16))
    tables = []
    try:
        hammer = subprocess.Popen([sys.executable, str(script), "2"])
        while hammer.poll() is None:
            source.poll(10)
            tables.append(decoder.decode(source.take(), 0))
        source.poll(0)
        tables.append(decoder.decode(source.take(), 0))
        lost = source.lost
    finally:
        source.close()
    rows = [r for t in tables for r in t.to_pylist()]
    if len(rows) < 1000:
        pytest.skip(f"too little contention to wrap the ring ({len(rows)} events)")
    assert {r["event"] for r in rows} <= {"attempt", "acquired", "failed"}
    assert all(r["comm"] and r["tid"] > 0 and r["ts_ns"] > 0 for r in rows)
    # other tasks of the machine may contend on pipes of their own (CI's lab build)
    ours = [r for r in rows if r["comm"] == HAMMER_COMM]
    pipe = {r["lock_addr"] for r in ours if "pipe_write" in r["caller"]}
    assert len(pipe) == 1  # a torn record would show a stray lock address
    print(f"{len(rows)} events, {lost} lost through a 64 KiB ring")
