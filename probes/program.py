"""Assembles the BPF C text BCC compiles: shared code, a program, and its attach functions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files

from lktrace.probes.record import c_struct
from lktrace.probes.targets import Api, Role, Targets

#: Fallback API names of the tracepoint program, by the FALLBACK_* index in contention.c.
CONTENTION_APIS = ("mutex_lock", "down_read", "down_write")


@dataclass
class Options:
    """What the user asked for, as far as the BPF program is concerned."""

    stacks: bool = True
    scope_all: bool = False
    pid: int | None = None
    comm: str | None = None
    ringbuf: bool = True
    ringbuf_pages: int = 4096  # 16 MiB
    stack_depth: int = 48
    stack_buckets: int = 65536


def source(name: str) -> str:
    """A BPF C file shipped in this package."""
    return files("lktrace.probes").joinpath(name).read_text()


def _program(name: str, stacks: bool) -> str:
    return (source("common.c") + source(name)).replace("@EVENT_STRUCT@", c_struct(stacks))


def cflags(opts: Options, targets: Targets) -> list[str]:
    """The -D flags for both programs."""
    flags = [
        f"-DSTACKS={int(opts.stacks)}",
        f"-DSTACK_DEPTH={opts.stack_depth}",
        f"-DSTACK_BUCKETS={opts.stack_buckets}",
        f"-DRINGBUF={int(opts.ringbuf)}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
        f"-DSCOPE_ALL={int(opts.scope_all)}",
        f"-DFILTER_PID={opts.pid or 0}",
        f"-DSELF_PID={os.getpid()}",
        f"-DPCI_BUS_TYPE={targets.pci_bus_type:#x}ULL",
        f"-DWRAPPED_LOCK_ADDR={targets.wrapped_lock:#x}ULL",
    ]
    if opts.comm:
        flags.append(f'-DFILTER_COMM="{opts.comm[:15]}"')
    off = targets.offsets
    if targets.device_offsets_known:
        flags += [
            f"-DDEV_MUTEX_OFF={off['mutex']}",
            f"-DDEV_BUS_OFF={off['bus']}",
            f"-DDEV_NAME_OFF={off['name']}",
            f"-DBUS_NAME_OFF={off['bus_name']}",
        ]
    else:
        flags.append("-DDEVICE_FROM_HEADERS=1")
    return flags


def lock_program(
    targets: Targets, opts: Options, fentry: bool
) -> tuple[str, list[tuple[str, str, str]]]:
    """The mutex program and its attachments ``(kind, kernel function, BPF function)``.

    With ``fentry`` the attach functions are BCC's KFUNC_PROBE/KRETFUNC_PROBE, which BCC
    attaches itself when loading (function name ``kfunc__<target>``).
    """
    parts = [_program("lockprobe.c", opts.stacks)]
    attach: list[tuple[str, str, str]] = []
    calls = [(f"{i}", i, api) for i, api in enumerate(targets.apis)]
    calls += [
        (f"s{i}", None, Api(name, Role.LOCK, nargs=0)) for i, name in enumerate(targets.scope)
    ]
    for tag, index, api in calls:
        entry, ret = _handlers(index, api)
        if fentry:
            args = [f"u64 a{n}" for n in range(api.nargs)]
            parts.append(_fentry("KFUNC_PROBE", api.name, args, entry.format(lock="a0")))
            attach.append(("fentry", api.name, f"kfunc__{api.name}"))
            if ret:
                rc = ["int rc"] if api.ret else []
                parts.append(_fentry("KRETFUNC_PROBE", api.name, args + rc, ret.format(rc="rc")))
                attach.append(("fexit", api.name, f"kretfunc__{api.name}"))
            continue
        parts.append(
            f"int lk_e{tag}(struct pt_regs *ctx)\n{{ {entry.format(lock='PT_REGS_PARM1(ctx)')} }}"
        )
        attach.append(("kprobe", api.name, f"lk_e{tag}"))
        if ret:
            parts.append(
                f"int lk_r{tag}(struct pt_regs *ctx)\n{{ {ret.format(rc='(int)PT_REGS_RC(ctx)')} }}"
            )
            attach.append(("kretprobe", api.name, f"lk_r{tag}"))
    return "\n\n".join(parts) + "\n", attach


def _fentry(macro: str, name: str, args: list[str], body: str) -> str:
    return f"{macro}({', '.join([name, *args])})\n{{ {body} }}"


def _handlers(index: int | None, api: Api) -> tuple[str, str]:
    """Bodies of the entry and return functions of one target ({lock}, {rc} to fill)."""
    if index is None:
        return "return on_scope_entry();", "return on_scope_return();"
    if api.role is Role.LOCK:
        rc = "{rc}" if api.ret else "0"
        return (
            f"return on_lock_entry(ctx, {index}, {int(api.ret)}, {{lock}});",
            f"return on_lock_return(ctx, {rc});",
        )
    if api.role is Role.UNLOCK:
        return f"return on_unlock(ctx, {index}, {{lock}});", ""
    if api.role is Role.WRAP_LOCK:
        return f"return on_wrap_lock_entry(ctx, {index});", "return on_wrap_lock_return(ctx);"
    return f"return on_wrap_unlock_entry(ctx, {index});", "return on_wrap_unlock_return();"


def contention_program(opts: Options) -> str:
    """The tracepoint program (attached by BCC itself: TRACEPOINT_PROBE)."""
    return _program("contention.c", opts.stacks)
