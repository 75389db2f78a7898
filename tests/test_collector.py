"""The recorder's user-space pipeline on the synthetic source: decoding, ordering,
symbolisation, spool and recovery, metadata, lost events, signals, file safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from lktrace.collector import output
from lktrace.collector.errors import CollectorError
from lktrace.collector.events import Decoder
from lktrace.collector.record import Recording, RecordRequest, prepare_output, recover
from lktrace.collector.spool import read_spool, spool_path
from lktrace.collector.synthetic import FUNCTIONS, STACKS, SyntheticSource, addr, kallsyms
from lktrace.probes.kallsyms import Kallsyms
from lktrace.probes.record import c_struct, event_dtype
from lktrace.trace import TraceError, TraceMeta, read_trace
from lktrace.version import writer

HERE = Path(__file__).parent
SCRIPT = HERE / "synthetic_record.py"


def decode(source: SyntheticSource, seq0: int = 0):
    source.poll(0)
    dec = Decoder(kallsyms(), source.apis, source.stack_lookup)
    return dec, dec.decode(source.take(), seq0)


def drain_to(tmp_path: Path, source: SyntheticSource, **kw) -> tuple[TraceMeta, int, Path]:
    out = tmp_path / "t.parquet"
    work = prepare_output(out, force=False)
    meta = TraceMeta(command="test", probes=["mutex_lock"])
    rec = Recording(source, kallsyms(), meta, work, out, force=False)
    for name, value in kw.items():
        setattr(rec.drain, name, value)
    rec.drain.run(lambda: source.done, poll_ms=0)
    meta, rows = rec.finish({})
    return meta, rows, out


def test_c_struct_matches_numpy_layout():
    with_stacks, without = c_struct(stacks=True), c_struct(stacks=False)
    assert "u64 ips[4];" in with_stacks and "u64 ips[8];" in without
    assert "char comm[16];" in with_stacks and "char name[16];" in with_stacks
    # C pads the struct to 8 bytes, as numpy's aligned dtype does; the frames come last
    small, big = event_dtype(stacks=True), event_dtype(stacks=False)
    assert (small.itemsize, big.itemsize) == (72 + 32, 72 + 64)
    assert small.fields["ips"][1] == big.fields["ips"][1] == 72


def test_kallsyms_symbolize_and_duplicates():
    syms = Kallsyms(
        [
            "ffffffff81000000 T alpha",
            "ffffffff81000100 t beta",
            "ffffffff81000200 t beta",
            "ffffffff81000300 D some_data",
            "ffffffff81000380 T _etext",
            "ffffffff81000000 T _stext",
            "ffffffffc0000000 t gamma [nvme]",
        ],
        ["nvme 4096 0 - Live 0xffffffffc0000000"],
    )
    addrs = [0xFFFFFFFF81000010, 0xFFFFFFFF81000250, 0x10, 0xFFFFFFFFC0000010, 0xFFFFFFFFC0002000]
    got = syms.symbolize(addrs)
    # past the module's end is a BPF program, not gamma+0x2000
    assert got == ["alpha+0x10", "beta+0x50", "0x10", "gamma+0x10", "0xffffffffc0002000"]
    big = Kallsyms(
        ["ffffffffc0000000 t gamma [nvme]"], ["nvme 1048576 0 - Live 0xffffffffc0000000"]
    )
    assert big.symbolize([0xFFFFFFFFC0000100, 0xFFFFFFFFC0020000]) == [
        "gamma+0x100",
        "0xffffffffc0020000",  # in the module's range but too far past any function
    ]
    assert syms.has("alpha") and not syms.has("beta")  # ambiguous: not attachable by name
    assert not syms.has("gamma")  # modules are not probed
    assert syms.data["some_data"] == 0xFFFFFFFF81000300


def test_decode_orders_by_time_and_numbers_rows():
    _, t = decode(SyntheticSource(total=5000, chunk=5000), seq0=100)
    ts = t["ts_ns"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert t["seq"].to_pylist() == list(range(100, 5100))


def test_decode_symbolises_stacks_and_names_locks():
    dec, t = decode(SyntheticSource(total=2000, chunk=2000))
    rows = t.to_pylist()
    stacks = dec.stacks.stacks
    by_caller = {r["caller"]: r for r in rows}
    # BPF programs and trampolines are stripped (named or not), and so is the traced
    # function's fentry return under a trampoline: frame 0 is the lock API function
    remove = by_caller["remove_store+0x24"]
    assert stacks[remove["stack_id"]] == [
        "mutex_lock+0x5",
        "remove_store+0x24",
        "kernfs_fop_write_iter+0x10c",
        "vfs_write+0x1b0",
    ]
    assert stacks[by_caller["unbind_store+0x31"]["stack_id"]][0] == "mutex_lock+0x0"
    assert remove["lock_class"] == "mutex@remove_store"
    assert remove["lock_name"] == f"0x{remove['lock_addr']:x}"
    unbind = by_caller["unbind_store+0x31"]
    assert (unbind["lock_class"], unbind["lock_name"]) == ("device_lock", "pci:0000:01:00.0")
    wrapped = by_caller["sriov_numvfs_store+0x58"]
    assert wrapped["api"] == "pci_lock_rescan_remove"
    assert wrapped["lock_class"] == wrapped["lock_name"] == "pci_rescan_remove_lock"
    release = by_caller["device_release_driver+0x2a"]
    assert (release["event"], release["api"]) == ("released", "mutex_unlock")
    assert len(stacks) == len(STACKS)
    assert {r["comm"] for r in rows} == {"writer", "udevd", "kworker/0:1"}
    # a stack the map refused: no stack id, but the frames in the record give the caller
    refused = [r for r in rows if r["stack_id"] is None]
    assert refused and dec.stack_errors == len(refused)
    assert {(r["caller"], r["lock_class"]) for r in refused} == {
        ("unbind_store+0x31", "device_lock")
    }


def test_decode_without_stacks_uses_the_frames_in_the_records():
    dec, t = decode(SyntheticSource(total=2000, chunk=2000, stacks=False))
    assert t["stack_id"].null_count == t.num_rows
    assert len(dec.stacks) == 0
    callers = set(t["caller"].cast("string").to_pylist())
    assert callers == {
        "remove_store+0x24",
        "unbind_store+0x31",
        "sriov_numvfs_store+0x58",
        "device_release_driver+0x2a",
    }


def test_decode_names_the_api_from_the_stack_for_tracepoint_records():
    syms = Kallsyms(
        [
            "ffffffff81000000 t __mutex_lock.constprop.0",
            "ffffffff81001000 T pci_lock_rescan_remove",
            "ffffffff81002000 T sriov_numvfs_store",
            "ffffffff81003000 T anon_pipe_write",
            "ffffffff81004000 T _etext",
        ]
    )
    stacks = {
        1: [0xFFFFFFFF81000020, 0xFFFFFFFF81001004, 0xFFFFFFFF81002125],
        2: [0xFFFFFFFF81000020, 0xFFFFFFFF81003043],
    }
    ev = np.zeros(2, dtype=event_dtype(stacks=True))
    ev["stack_id"] = [1, 2]
    ev["api"] = 0x8000  # name it from the stack; fallback index 0
    ev["ts"] = [1, 2]
    t = Decoder(syms, ["mutex_lock"], stacks.get).decode(ev.tobytes(), 0).to_pylist()
    assert (t[0]["api"], t[0]["lock_class"], t[0]["caller"]) == (
        "pci_lock_rescan_remove",
        "pci_rescan_remove_lock",
        "sriov_numvfs_store+0x125",
    )
    assert (t[1]["api"], t[1]["lock_class"]) == ("mutex_lock", "mutex@anon_pipe_write")


def test_drain_batches_bounded_and_trace_reads_back(tmp_path):
    source = SyntheticSource(total=50_000, chunk=1000)
    # a flush at least every 4 chunks' worth of bytes: many spool batches
    _meta, rows, out = drain_to(
        tmp_path, source, max_buffer=4 * 1000 * event_dtype(stacks=True).itemsize
    )
    assert rows == 50_000
    trace = read_trace(out)
    assert trace.num_events == 50_000
    assert pc.count_distinct(trace.table["seq"]).as_py() == 50_000
    assert len(trace.meta.stacks) == len(STACKS)
    assert trace.meta.command == "test" and trace.meta.probes == ["mutex_lock"]
    assert not spool_path(out).exists()
    for sid in trace.table["stack_id"].drop_null().unique().to_pylist():
        assert trace.stack(sid)[0].partition("+")[0] in (
            "mutex_lock",
            "mutex_unlock",
            "pci_lock_rescan_remove",
        )


def test_lost_events_reach_the_metadata(tmp_path):
    meta, _, out = drain_to(tmp_path, SyntheticSource(total=10_000, chunk=1000, lost_per_poll=3))
    assert read_trace(out).meta.lost_events == 30 == meta.lost_events


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_recorder_outlives_its_test():
    """A recorder left running by a failed test would spool until the disk is full."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def run_script(out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    _STARTED.append(proc)
    return proc


def wait_recording(proc: subprocess.Popen, out: Path, events: int = 1) -> None:
    assert proc.stdout.readline().strip() == "recording"
    spool = spool_path(out) / "events.arrows"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _, batches, _ = read_spool(spool.parent)
            if sum(b.num_rows for b in batches) >= events:
                return
        except TraceError:
            pass  # not created, or its schema not written yet
        time.sleep(0.1)
    raise AssertionError("the recorder wrote nothing to its spool")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_flushes_a_complete_trace(tmp_path, sig):
    out = tmp_path / "t.parquet"
    proc = run_script(out)
    wait_recording(proc, out, events=2000)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    trace = read_trace(out)
    assert trace.num_events >= 2000
    assert stdout.strip() == f"wrote {trace.num_events}"
    assert trace.meta.extra["stopped_by"] == sig.name
    assert trace.meta.extra["writer"] == writer()
    assert trace.meta.duration_ns > 0
    assert not spool_path(out).exists()


def test_kill_9_then_recover(tmp_path):
    out = tmp_path / "t.parquet"
    proc = run_script(out, "--lost-per-poll", "1")
    wait_recording(proc, out, events=3000)
    proc.kill()
    proc.wait(timeout=10)
    assert not out.exists()
    with pytest.raises(TraceError, match="lktrace recover"):
        read_trace(out)  # says what to do with the spool left behind
    done = subprocess.run(
        [sys.executable, "-m", "lktrace", "recover", str(spool_path(out))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"lktrace: wrote {out}: ")
    trace = read_trace(out)
    assert trace.num_events >= 3000
    assert trace.meta.extra["recovered"].startswith("yes")
    assert trace.meta.extra["writer"] == writer()
    assert trace.meta.lost_events > 0 and len(trace.meta.stacks) == len(STACKS)
    assert trace.meta.extra["backend"] == "synthetic"


def test_recover_drops_a_partial_last_batch(tmp_path):
    out = tmp_path / "t.parquet"
    proc = run_script(out, "--total", "5000", "--duration", "30")
    wait_recording(proc, out, events=5000)
    proc.kill()
    proc.wait(timeout=10)
    events = spool_path(out) / "events.arrows"
    with events.open("ab") as f:
        f.write(b"\xff\xff\xff\xff\x40\x00\x00\x00partial")
    meta, rows, _ = recover(spool_path(out), out, force=False)
    assert rows == 5000
    assert "truncated" in meta.extra["spool"]


def test_command_stops_the_recording(tmp_path):
    out = tmp_path / "t.parquet"
    proc = run_script(out, "--", sys.executable, "-c", "import time; time.sleep(1); exit(3)")
    _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert read_trace(out).meta.extra["command_exit"] == "3"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_output_belongs_to_the_sudo_user(tmp_path):
    out = tmp_path / "t.parquet"
    proc = run_script(
        out, "--total", "100", "--duration", "1", env={"SUDO_UID": "4321", "SUDO_GID": "8765"}
    )
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    st = out.stat()
    assert (st.st_uid, st.st_gid) == (4321, 8765)


def test_refuses_symlink_and_existing_file(tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep me")
    link = tmp_path / "t.parquet"
    link.symlink_to(target)
    with pytest.raises(CollectorError, match="symbolic link"):
        prepare_output(link, force=True)
    existing = tmp_path / "e.parquet"
    existing.write_text("old")
    with pytest.raises(CollectorError, match="--force"):
        prepare_output(existing, force=False)
    spool_link = tmp_path / "s.parquet.spool"
    spool_link.symlink_to(tmp_path)
    with pytest.raises(CollectorError, match="symbolic link"):
        prepare_output(tmp_path / "s.parquet", force=True)
    assert target.read_text() == "keep me" and tmp_path.is_dir()


def test_force_replaces_an_existing_trace(tmp_path):
    out = tmp_path / "t.parquet"
    out.write_text("old")
    proc = run_script(out, "--total", "100", "--duration", "1")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "already exists" in stderr
    assert out.read_text() == "old"
    proc = run_script(out, "--total", "100", "--duration", "1", "--force")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert read_trace(out).num_events == 100


def test_create_into_does_not_overwrite_what_appeared_meanwhile(tmp_path):
    out = tmp_path / "t.parquet"
    work = output.private_dir(out)

    def write(f):
        f.write(b"new")
        out.write_text("appeared")

    with pytest.raises(CollectorError, match="already exists"):
        output.create_into(out, work, write, force=False, owner=None)
    assert out.read_text() == "appeared"


def test_unwritable_output_is_one_clear_error(tmp_path):
    with pytest.raises(CollectorError, match="does not exist"):
        prepare_output(tmp_path / "missing" / "t.parquet", force=False)
    with pytest.raises(CollectorError, match="cannot write"):
        prepare_output(Path("/proc/t.parquet"), force=False)


def test_recover_needs_a_spool(tmp_path):
    with pytest.raises(CollectorError, match="not a spool"):
        recover(tmp_path, tmp_path / "x.parquet", force=False)
    with pytest.raises(CollectorError, match="not a spool"):
        recover(tmp_path / "missing.parquet.spool", None, force=False)


def test_synthetic_functions_cover_the_stacks():
    syms = kallsyms()
    for frames in STACKS.values():
        for name in syms.symbolize(frames):
            assert name.partition("+")[0] in FUNCTIONS or name.startswith("0x")
    assert addr("mutex_lock") < addr("mutex_unlock")


def test_record_request_defaults():
    req = RecordRequest(output=Path("x"))
    assert (req.scope, req.stacks, req.backend) == ("pci", True, "auto")


def test_reading_traces_never_imports_bcc(tmp_path):
    _, _, out = drain_to(tmp_path, SyntheticSource(total=100, chunk=100))
    code = (
        "import sys; from lktrace.cli import app; "
        f"sys.argv = ['lktrace', 'info', {str(out)!r}]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "assert 'bcc' not in sys.modules, 'bcc imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "100" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_one_line_and_keeps_the_spool(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = disk / "t.parquet"
        proc = run_script(out, "--chunk", "20000", "--delay", "0")
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, stderr
        line = stderr.splitlines()[-1]
        assert line.startswith("lktrace: writing the trace failed (No space left on device)")
        assert f"'lktrace recover {spool_path(out)}'" in line
        assert spool_path(out).is_dir() and not out.exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_second_signal_gives_up_and_keeps_the_spool(tmp_path):
    out = tmp_path / "t.parquet"
    # a source so slow to poll that the first SIGTERM is still pending when the second comes
    proc = run_script(out, "--delay", "2")
    assert "Ctrl-C or SIGTERM stops" in proc.stderr.readline()  # the handlers are in
    time.sleep(0.3)
    proc.terminate()
    time.sleep(0.2)
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2, stderr
    assert stderr.splitlines()[-1].startswith("lktrace: interrupted; what was flushed is in ")
    assert spool_path(out).is_dir() and not out.exists()


def test_buffer_size_is_a_power_of_two_pages():
    from lktrace.collector.record import buffer_pages

    page = os.sysconf("SC_PAGE_SIZE")
    for mb in (1, 3, 16, 100):
        pages = buffer_pages(mb)
        assert pages & (pages - 1) == 0 and pages * page >= mb << 20 > pages * page // 2
