"""The event record the BPF programs emit and user space decodes.

One fixed-size C struct per event, rendered into the BPF source from
:data:`FIELDS` (:func:`c_struct`) and viewed from Python as a numpy
structured array (:func:`event_dtype`), so the two sides cannot drift apart.
"""

from __future__ import annotations

import numpy as np

NAME_LEN = 16  # device name bytes: "0000:01:00.0" and its NUL

#: (name, C type, numpy type, count): the event record, in C declaration order; the
#: first frames of the stack (``ips``) come last, their number depending on the mode.
FIELDS = (
    ("ts", "u64", "<u8", 1),
    ("lock", "u64", "<u8", 1),
    ("pid", "u32", "<u4", 1),
    ("tid", "u32", "<u4", 1),
    ("cpu", "u32", "<u4", 1),
    ("stack_id", "s32", "<i4", 1),
    ("api", "u16", "<u2", 1),
    ("event", "u8", "u1", 1),
    ("kind", "u8", "u1", 1),
    ("comm", "char", "S16", 16),
    ("name", "char", f"S{NAME_LEN}", NAME_LEN),
)


def frames_kept(stacks: bool) -> int:
    """Frames in the record: the call site without stacks; with stacks, only filled when
    the stack map refused the stack (a hash bucket taken), enough for the caller under
    fentry (program, trampoline, lock function, caller)."""
    return 4 if stacks else 8


def _fields(stacks: bool) -> tuple[tuple[str, str, str, int], ...]:
    return (*FIELDS, ("ips", "u64", "<u8", frames_kept(stacks)))


def event_dtype(stacks: bool) -> np.dtype:
    """The numpy layout of the record (C alignment and padding)."""
    return np.dtype(
        [
            (n, t, (c,)) if c > 1 and not t.startswith("S") else (n, t)
            for n, _, t, c in _fields(stacks)
        ],
        align=True,
    )


def c_struct(stacks: bool) -> str:
    """The C declaration of the event record."""
    lines = [f"#define NIPS {frames_kept(stacks)}", f"#define NAME_LEN {NAME_LEN}"]
    lines.append("struct event {")
    for name, ctype, _, count in _fields(stacks):
        lines.append(f"    {ctype} {name}[{count}];" if count > 1 else f"    {ctype} {name};")
    lines.append("};")
    return "\n".join(lines)


# Values of the ``kind`` field (the KIND_* enum of the BPF programs).
KIND_MUTEX, KIND_DEVICE, KIND_WRAPPED = 0, 1, 2
#: Bit of ``api`` meaning "name the API from the stack; the rest is a fallback"
#: (tracepoint backend).
API_FROM_STACK_BIT = 0x8000
