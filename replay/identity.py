"""When two findings are the same finding: in two runs, two boots, two kernels.

Addresses and task ids change from boot to boot; lock names and classes do
not.  A lock is known by its name (``pci:0000:01:00.0``,
``pci_rescan_remove_lock``), an anonymous lock (named by its address) by its
class, and a class by its name without offsets.  A finding is its kind plus
the locks it is about: ``lktrace diff`` (text, JSON and HTML) and the
report's badges all match findings with :func:`finding_identity`.
"""

from __future__ import annotations

from lktrace.replay.findings import Anomaly, Deadlock, Inversion
from lktrace.trace import frame_symbol

Finding = Deadlock | Inversion | Anomaly
#: A cycle: its level and its edges as (from lock, to lock).
CycleKey = tuple[str, frozenset[tuple[str, str]]]


def lock_key(level: str, label: str, lock_class: str) -> str:
    """The name a lock matches by: its class, its name, or for an anonymous lock its class."""
    if level == "class" or label.startswith("0x"):
        return frame_symbol(lock_class)
    return label


def cycle_identity(inv: Inversion) -> CycleKey:
    """An inversion's cycle as its level and its edges between lock keys."""
    edges = frozenset(
        (lock_key(inv.level, w.src, w.src_class), lock_key(inv.level, w.dst, w.dst_class))
        for w in inv.edges
    )
    return inv.level, edges


def finding_identity(f: Finding) -> tuple:
    """What makes a finding "the same" in two runs: its kind and the keys of its locks."""
    if isinstance(f, Deadlock):
        locks = frozenset(
            lock_key("instance", t.waits_for.lock_name, t.waits_for.lock_class) for t in f.tasks
        )
        return ("deadlock", locks)
    if isinstance(f, Inversion):
        return ("guarded" if f.gate else "inversion", *cycle_identity(f))
    return (f.kind, lock_key("instance", f.lock_name, f.lock_class))
