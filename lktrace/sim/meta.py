"""The metadata a simulated trace carries, shaped like a real recording's."""

from __future__ import annotations

from lktrace.trace import TraceMeta

#: The functions ``lktrace record`` attaches to.
PROBES = [
    "mutex_lock",
    "mutex_lock_interruptible",
    "mutex_lock_killable",
    "mutex_trylock",
    "mutex_unlock",
    "pci_lock_rescan_remove",
    "pci_unlock_rescan_remove",
]
#: A fixed wall clock, so that a seed always gives the same file.
STARTED_AT = "2026-04-22T06:40:12+00:00"


def sim_meta(
    *,
    kernel: str,
    kernel_version: str,
    scenario: str,
    seed: int,
    command: str,
    duration_ns: int,
    stacks: list[list[str]],
) -> TraceMeta:
    """Metadata of a simulated trace; ``extra`` says where it came from."""
    return TraceMeta(
        kernel=kernel,
        kernel_version=kernel_version,
        host="simulator",
        started_at=STARTED_AT,
        duration_ns=duration_ns,
        probes=list(PROBES),
        lost_events=0,
        command=command,
        stacks=stacks,
        extra={"source": "simulator", "scenario": scenario, "seed": str(seed)},
    )
