"""BCC-backed event sources: loading bcc, finding kernel headers, attaching the probes,
and draining their buffer as raw records. Only ``lktrace record`` imports this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lktrace.collector.errors import CollectorError
from lktrace.collector.ringbuf import RingReader
from lktrace.probes import program
from lktrace.probes.record import event_dtype
from lktrace.probes.targets import CONTENTION_SINCE, Targets

DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
TRACEFS = Path("/sys/kernel/tracing")
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
CAP_PERFMON, CAP_BPF, CAP_SYS_ADMIN = 38, 39, 21
#: sudo's secure_path on Debian and Ubuntu (/etc/sudoers): the PATH ``sudo lktrace`` searches.
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KRETPROBE_MAXACTIVE = 1024


def import_bcc() -> Any:
    """The ``bcc`` module, also from the system's dist-packages when run from a venv."""
    try:
        import bcc
    except ImportError:
        if not (DIST_PACKAGES / "bcc").is_dir():
            raise CollectorError(
                "bcc is not installed: on Debian/Ubuntu 'apt install python3-bpfcc' "
                "(Fedora: 'dnf install python3-bcc')"
            ) from None
        sys.path.append(str(DIST_PACKAGES))
        try:
            import bcc
        except ImportError as e:
            raise CollectorError(
                f"bcc in {DIST_PACKAGES} does not load in Python "
                f"{sys.version_info.major}.{sys.version_info.minor} ({e}); run lktrace from "
                "a venv made with the system's /usr/bin/python3 (README: Install)"
            ) from None
    return bcc


def check_privileges(status: Path = Path("/proc/self/status")) -> None:
    """CAP_BPF and CAP_PERFMON (v5.8+), or CAP_SYS_ADMIN (what root normally has)."""
    caps = 0
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
    bpf_caps = 1 << CAP_BPF | 1 << CAP_PERFMON
    if not (caps >> CAP_SYS_ADMIN & 1 or caps & bpf_caps == bpf_caps):
        raise CollectorError(
            f"recording needs root or CAP_BPF+CAP_PERFMON: run it with sudo{sudo_hint()}"
        )


def sudo_hint(argv0: str | None = None) -> str:
    """How to reach this lktrace under sudo when its secure_path does not lead to it."""
    script = Path(shutil.which(argv0 or sys.argv[0]) or argv0 or sys.argv[0]).absolute()
    if script.name != "lktrace":  # python -m lktrace
        return f" (sudo {sys.executable} -m lktrace record ...)"
    found = shutil.which("lktrace", path=SUDO_PATH)
    if found and Path(found).resolve() == script.resolve():
        return ""
    return (
        f"; sudo's PATH has no lktrace: sudo {script} record ..., or link it once: "
        f"sudo ln -sf {script} /usr/local/bin/lktrace"
    )


def kprobes_available() -> bool:
    """Whether the kernel has kprobe events (CONFIG_KPROBE_EVENTS)."""
    return KPROBE_PMU.exists() or (TRACEFS / "kprobe_events").exists()


def fentry_supported() -> bool:
    """Whether BCC sees BTF trampolines (fentry/fexit) on this kernel."""
    return bool(import_bcc().BPF.support_kfunc())


def mount_tracefs() -> None:
    """Mount tracefs at /sys/kernel/tracing unless it is already there."""
    if (TRACEFS / "events").is_dir():
        return
    done = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True
    )
    if done.returncode or not (TRACEFS / "events").is_dir():
        raise CollectorError(f"cannot mount tracefs on {TRACEFS}: {done.stderr.strip()}")


@dataclass
class Headers:
    """Where BCC finds kernel headers: extra environment and include flags, and a note."""

    env: dict[str, str] = field(default_factory=dict)
    cflags: list[str] = field(default_factory=list)
    note: str = ""


def find_headers(release: str, layout_free: bool, modules: Path = Path("/lib/modules")) -> Headers:
    """Headers for ``release``, or (when the program needs no struct layout) any installed.

    BCC reads /lib/modules/RELEASE/build; BCC_KERNEL_SOURCE overrides it. Another
    kernel's headers do for a program that takes its offsets from BTF.
    """
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return Headers(note=f"BCC_KERNEL_SOURCE={os.environ['BCC_KERNEL_SOURCE']}")
    if (modules / release / "build").is_dir():
        return Headers(note=release)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Headers(note="kheaders (CONFIG_IKHEADERS)")
    package = f"linux-headers-{release}"
    if layout_free:
        others = sorted(
            (p for p in modules.glob("*/build") if (p.parent / "source").is_dir()),
            key=lambda p: p.parent.name,
        )
        if others:
            build, src = others[-1].resolve(), (others[-1].parent / "source").resolve()
            inc = [
                "arch/x86/include/generated",
                "include",
                "arch/x86/include/generated/uapi",
                "include/generated/uapi",
            ]
            return Headers(
                env={"BCC_KERNEL_SOURCE": str(src)},
                cflags=[f"-I{build / d}" for d in inc],
                note=f"{others[-1].parent.name} (not the running kernel's; the program "
                "takes struct offsets from BTF, so only generic headers are used)",
            )
    raise CollectorError(
        f"kernel headers for {release} are missing: install {package} "
        f"(Debian/Ubuntu: apt install {package}), or point BCC_KERNEL_SOURCE at them"
    )


@contextlib.contextmanager
def bcc_messages() -> Iterator[list[str]]:
    """Capture what libbcc and clang print on fd 2; the list is filled on exit."""
    lines: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines += [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]


def load(bcc: Any, text: str, cflags: list[str], headers: Headers) -> Any:
    """Compile and load a program; a failure becomes one line with clang's or bcc's message."""
    saved = {k: os.environ.get(k) for k in headers.env}
    os.environ.update(headers.env)  # BCC reads BCC_KERNEL_SOURCE from the environment
    try:
        with bcc_messages() as lines:
            try:
                return bcc.BPF(text=text.encode(), cflags=cflags + headers.cflags)
            except Exception as e:  # bcc raises bare Exception for compile and attach errors
                failure = e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    detail = next((ln for ln in lines if "error:" in ln), None)  # clang's first error
    detail = detail or (lines[-1] if lines else str(failure))
    raise CollectorError(f"the BPF program did not load: {detail.strip()}")


class BccSource:
    """Drains a BCC program's event buffer into raw records (see :func:`event_dtype`)."""

    def __init__(self, bpf: Any, opts: program.Options, apis: list[str]) -> None:
        self.bpf = bpf
        self.apis = apis
        self._chunks: list[bytes] = []
        self.buffered = 0
        self.user_lost = 0
        size = event_dtype(opts.stacks).itemsize
        self._ring: RingReader | None = None

        def on_event(_ctx: Any, data: int, _size: int) -> None:
            self._chunks.append(ctypes.string_at(data, size))
            self.buffered += size

        def on_lost(count: int) -> None:
            self.user_lost += count

        if opts.ringbuf:
            data_size = opts.ringbuf_pages * mmap.PAGESIZE
            self._ring = RingReader(bpf[b"events"].map_fd, data_size, size)
        else:
            # per CPU: the same total as the ring buffer would have, at least 64 pages
            per_cpu = max(64, opts.ringbuf_pages // max(1, os.cpu_count() or 1))
            pages = 1 << (per_cpu - 1).bit_length()
            bpf[b"events"].open_perf_buffer(on_event, page_cnt=pages, lost_cb=on_lost)
        self._stacks = bpf[b"stacks"] if opts.stacks else None
        self.stack_lookup = self._lookup if opts.stacks else None

    def _lookup(self, stack_id: int) -> list[int]:
        try:
            frames = self._stacks[self._stacks.Key(stack_id)].ip
        except KeyError:
            return []
        return list(itertools.takewhile(bool, frames))

    def poll(self, timeout_ms: int) -> None:
        if self._ring is None:
            self.bpf.perf_buffer_poll(timeout_ms)
            return
        raw = self._ring.read()
        if not raw:
            self._ring.wait(timeout_ms)
            raw = self._ring.read()
        if raw:
            self._chunks.append(raw)
            self.buffered += len(raw)

    def take(self) -> bytes:
        raw = b"".join(self._chunks)
        self._chunks = []
        self.buffered = 0
        return raw

    def counters(self) -> dict[str, int]:
        """Kernel-side counters (lost, state_full, held_full) summed over CPUs."""
        table = self.bpf[b"counters"]
        names = ("lost", "state_full", "held_full")
        return {name: sum(table[ctypes.c_int(i)]) for i, name in enumerate(names) if i < len(table)}

    @property
    def lost(self) -> int:
        return self.counters()["lost"] + self.user_lost

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
        self.bpf.cleanup()


def open_lock_probes(
    targets: Targets, opts: program.Options, headers: Headers, fentry: bool
) -> tuple[BccSource, list[str]]:
    """Compile, load and attach the mutex program; returns the source and attached names."""
    bcc = import_bcc()
    text, attach = program.lock_program(targets, opts, fentry)
    bpf = load(bcc, text, program.cflags(opts, targets), headers)
    attached: list[str] = []
    if not fentry:
        with contextlib.suppress(CollectorError):
            mount_tracefs()  # BCC sets a kretprobe's maxactive through tracefs only
        with bcc_messages():
            for kind, func, fn in attach:
                if _attach(bpf, kind, func, fn):
                    attached += [func] if kind == "kprobe" else []
                else:
                    targets.missing.append(f"{func} ({kind} failed)")
        if not any(a.name in attached for a in targets.apis):
            bpf.cleanup()
            raise CollectorError("no mutex function could be probed on this kernel")
    else:
        attached = list(dict.fromkeys(func for _, func, _ in attach))
    apis = [a.name for a in targets.apis]
    return BccSource(bpf, opts, apis), attached


def _attach(bpf: Any, kind: str, func: str, fn: str) -> bool:
    """Attach one kprobe or kretprobe; False when the kernel refuses it."""
    try:
        if kind == "kprobe":
            bpf.attach_kprobe(event=func.encode(), fn_name=fn.encode())
            return True
        try:
            # room for this many tasks sleeping in the function at once (default ~2/CPU)
            bpf.attach_kretprobe(
                event=func.encode(), fn_name=fn.encode(), maxactive=KRETPROBE_MAXACTIVE
            )
        except Exception:
            bpf.attach_kretprobe(event=func.encode(), fn_name=fn.encode())  # PMU: default
        return True
    except Exception:  # bcc: "Failed to attach BPF program ..."
        return False


def open_contention(targets: Targets, opts: program.Options, headers: Headers) -> BccSource:
    """Compile and attach the lock:contention_begin/end program."""
    bcc = import_bcc()
    mount_tracefs()
    if not (TRACEFS / "events/lock/contention_begin").is_dir():
        raise CollectorError(
            f"this kernel has no lock:contention_begin tracepoint (needs {CONTENTION_SINCE}+)"
        )
    bpf = load(bcc, program.contention_program(opts), program.cflags(opts, targets), headers)
    return BccSource(bpf, opts, list(program.CONTENTION_APIS))
