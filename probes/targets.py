"""What to attach to on the running kernel, and every kernel-version difference that matters.

The mutex API's exported functions changed over time; this module names each variant
with the kernel that introduced it, and :func:`discover` keeps those the running kernel
has (from /proc/kallsyms, and BTF for fentry), so nothing else hard-codes a name or a
struct layout.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from enum import IntEnum

from lktrace.probes.btf import Btf, BtfError
from lktrace.probes.kallsyms import Kallsyms


class Ret(IntEnum):
    """How a lock function's return value says whether it took the lock."""

    VOID = 0  # always acquired
    ZERO_OK = 1  # 0 = acquired, -EINTR/-EDEADLK = failed
    ONE_OK = 2  # 1 = acquired (trylock)


class Role(IntEnum):
    """What a probed function does to its lock."""

    LOCK = 0
    UNLOCK = 1
    WRAP_LOCK = 2  # a function that wraps one global mutex (pci_lock_rescan_remove)
    WRAP_UNLOCK = 3


@dataclass(frozen=True)
class Api:
    """A lock API function: its name, role, return convention and argument count."""

    name: str
    role: Role
    ret: Ret = Ret.VOID
    nargs: int = 1


# The mutex API as exported functions (kernel/locking/mutex.c, include/linux/mutex.h).
# Without lockdep a kernel exports the plain names; with CONFIG_DEBUG_LOCK_ALLOC the
# macros route through the *_nested names instead; the *_io variants exist since v4.10;
# v6.16 replaced mutex_lock_killable_nested by _mutex_lock_killable(lock, subclass,
# nest_lock) and routes lockdep's mutex_trylock through _mutex_trylock_nest_lock.
# Each one the kernel has is attached.
LOCK_APIS = (
    Api("mutex_lock", Role.LOCK),
    Api("mutex_lock_nested", Role.LOCK, nargs=2),
    Api("_mutex_lock_nest_lock", Role.LOCK, nargs=2),
    Api("mutex_lock_io", Role.LOCK),
    Api("mutex_lock_io_nested", Role.LOCK, nargs=2),
    Api("mutex_lock_interruptible", Role.LOCK, Ret.ZERO_OK),
    Api("mutex_lock_interruptible_nested", Role.LOCK, Ret.ZERO_OK, 2),
    Api("mutex_lock_killable", Role.LOCK, Ret.ZERO_OK),
    Api("mutex_lock_killable_nested", Role.LOCK, Ret.ZERO_OK, 2),
    Api("_mutex_lock_killable", Role.LOCK, Ret.ZERO_OK, 3),
    Api("mutex_trylock", Role.LOCK, Ret.ONE_OK),
    Api("_mutex_trylock_nest_lock", Role.LOCK, Ret.ONE_OK, 2),
    Api("mutex_unlock", Role.UNLOCK),
)
#: At least one of these must exist, or the kernel's mutex API is not one we know.
REQUIRED = ("mutex_unlock",)

# drivers/pci/probe.c since v3.14: the rescan/remove lock,
# taken only through these wrappers. The v14 SR-IOV series makes them reentrant.
WRAPPERS = (
    Api("pci_lock_rescan_remove", Role.WRAP_LOCK, nargs=0),
    Api("pci_unlock_rescan_remove", Role.WRAP_UNLOCK, nargs=0),
)
#: The global lock each wrapper guards: its class and name in the trace.
WRAPPED_LOCK = "pci_rescan_remove_lock"

# Sleeping-lock entry points seen in stacks of the lock:contention_* tracepoints
# (kernel/locking/rwsem.c), so that backend can name the API from the stack.
RWSEM_APIS = (
    "down_read",
    "down_read_interruptible",
    "down_read_killable",
    "down_read_trylock",
    "down_write",
    "down_write_killable",
    "down_write_trylock",
    "down_read_nested",
    "down_write_nested",
)
#: Every function that is "the lock API" when found in a stack, innermost first.
STACK_APIS = frozenset([a.name for a in LOCK_APIS + WRAPPERS] + list(RWSEM_APIS))
#: Prefixes of frames that belong to the tracing machinery, not to the traced code.
INFRA_PREFIXES = (
    "bpf_",
    "__bpf",
    "perf_",
    "trace_",
    "__traceiter_",
    "ftrace",
    "kprobe",
    "__kprobe",
    "kretprobe",
    "__kretprobe",
    "rethook",
    "arch_rethook",
    "0x",
)
#: Prefixes of frames inside the lock implementation (mutex.c, rwsem.c, semaphore.c):
#: a tracepoint fires deep in them, and mutex_lock tail-calls its slow path, so the
#: frame below them is the caller.
LOCK_INTERNAL_PREFIXES = ("mutex_", "__mutex_", "_mutex_", "rwsem_", "__rwsem", "down_", "__down")

# Scope entry points: a task's mutex events are recorded while it is inside one of these
# (the device_lock and held-lock rules catch the rest). Chosen to cover each path that
# reaches device_lock and the rescan lock from user space or hotplug:
SCOPE_FUNCTIONS = (
    "remove_store",  # drivers/pci/pci-sysfs.c: /sys/bus/pci/devices/*/remove
    "rescan_store",  # pci-sysfs.c: /sys/bus/pci/rescan
    "dev_rescan_store",  # pci-sysfs.c: /sys/bus/pci/devices/*/rescan (v3.19+)
    "bus_rescan_store",  # pci-sysfs.c: /sys/class/pci_bus/*/rescan
    "sriov_numvfs_store",  # drivers/pci/iov.c: enable/disable VFs
    "unbind_store",  # drivers/base/bus.c: driver unbind (any bus; rare)
    "bind_store",  # drivers/base/bus.c: driver bind, may enable SR-IOV in probe
    "pciehp_ist",  # drivers/pci/hotplug/pciehp_hpc.c: hotplug event thread
    "pciehp_sysfs_enable_slot",  # pciehp_ctrl.c: /sys/bus/pci/slots/*/power
    "pciehp_sysfs_disable_slot",
    "pci_stop_and_remove_bus_device",  # drivers/pci/remove.c
    "pci_stop_and_remove_bus_device_locked",  # remove.c: remove_store's, takes the rescan lock
    "pci_rescan_bus",  # drivers/pci/probe.c
    "pci_enable_sriov",  # drivers/pci/iov.c
    "pci_disable_sriov",
    "sriov_disable",  # iov.c, static: often inlined
    "pci_device_probe",  # drivers/pci/pci-driver.c: driver .probe()
    "pci_device_remove",  # driver .remove()
)

# struct device members read in BPF (include/linux/device.h): the mutex behind
# device_lock() (dev->mutex since v2.6.35, a semaphore before), the bus pointer and the
# kobject name. Their offsets vary with version and config: taken from BTF.
DEVICE_MEMBERS = {
    "mutex": ("device", "mutex"),
    "bus": ("device", "bus"),
    "name": ("device", "kobj.name"),
    "bus_name": ("bus_type", "name"),
}

#: BPF ring buffer since v5.8; older kernels get a perf buffer.
RINGBUF_SINCE = (5, 8)
#: lock:contention_begin/end (include/trace/events/lock.h) since v5.19: the tracepoint
#: backend; their LCB_F_* flags are spelled out in contention.c.
CONTENTION_TRACEPOINTS = ("lock:contention_begin", "lock:contention_end")
CONTENTION_SINCE = "v5.19"


@dataclass
class Targets:
    """The functions to attach on this kernel, and the offsets the BPF program needs."""

    apis: list[Api]
    scope: list[str]
    missing: list[str] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    pci_bus_type: int = 0
    wrapped_lock: int = 0
    ringbuf: bool = True

    @property
    def probes(self) -> list[str]:
        return [a.name for a in self.apis] + self.scope

    @property
    def device_offsets_known(self) -> bool:
        """Whether BTF gave every struct offset the BPF program reads."""
        return set(DEVICE_MEMBERS) <= self.offsets.keys()


def kernel_release_tuple(release: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of ``uname -r``."""
    parts = (release or os.uname().release).split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def discover(syms: Kallsyms, btf: Btf | None, release: str | None = None) -> Targets:
    """The lock APIs, wrappers and scope functions present (once, by name) on this kernel."""
    missing: list[str] = []
    apis = []
    for api in LOCK_APIS + WRAPPERS:
        if syms.has(api.name):
            apis.append(api)
        else:
            missing.append(_why(syms, api.name))
    scope = [name for name in SCOPE_FUNCTIONS if syms.has(name)]
    missing += [_why(syms, name) for name in SCOPE_FUNCTIONS if not syms.has(name)]
    offsets = {}
    if btf is not None:
        for key, (struct_name, path) in DEVICE_MEMBERS.items():
            with contextlib.suppress(BtfError):
                offsets[key] = btf.offsetof(struct_name, path)
    return Targets(
        apis=apis,
        scope=scope,
        missing=missing,
        offsets=offsets,
        # data symbols: in kallsyms only with CONFIG_KALLSYMS_ALL (Debian has it)
        pci_bus_type=syms.data.get("pci_bus_type", 0),
        wrapped_lock=syms.data.get(WRAPPED_LOCK, 0),
        ringbuf=kernel_release_tuple(release) >= RINGBUF_SINCE,
    )


def fentry_possible(targets: Targets, btf: Btf | None) -> bool:
    """Whether every target has a BTF function entry (fentry/fexit attach by BTF id)."""
    return btf is not None and all(name in btf.functions for name in targets.probes)


def _why(syms: Kallsyms, name: str) -> str:
    count = syms.functions.get(name, 0)
    return f"{name} (ambiguous: {count} symbols)" if count > 1 else name
