"""The named scenarios the lab runs (scripts in guest/scenarios/) and what each should do."""

from __future__ import annotations

from dataclasses import dataclass

from lab.kernels import Kernel, RescanLocking

_NUMVFS, _SRIOV = RescanLocking.NUMVFS_STORE, RescanLocking.SRIOV_ENABLE_DISABLE


@dataclass(frozen=True)
class Scenario:
    name: str
    #: The PF's driver: ``igb`` (in-tree, every kernel) or ``lkpf`` (bookworm's kernels).
    driver: str
    #: The rescan-lock placements on which its writers hang for good.
    hangs_on: frozenset[RescanLocking]
    #: Seconds the guest waits for the recorded script before stopping the recorder.
    timeout: float
    #: Runs a race with no knob gets to hang where it should (each after the first in a
    #: boot of its own)
    tries: int = 1

    def runs_on(self, kernel: Kernel) -> bool:
        """lkpf is built against the kernel's own headers, which only bookworm's have."""
        return self.driver == "igb" or kernel.bookworm

    def hangs(self, kernel: Kernel) -> bool:
        return kernel.rescan_locking in self.hangs_on


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("rootport-remove-vs-numvfs", "lkpf", frozenset({_NUMVFS}), timeout=30),
        Scenario("rootport-remove-then-numvfs", "lkpf", frozenset(), timeout=120),
        Scenario("pf-remove-vs-unbind", "lkpf", frozenset(), timeout=120),
        Scenario("numvfs-cycle", "lkpf", frozenset(), timeout=120),
        Scenario("igb-unbind-vs-remove", "igb", frozenset({_SRIOV}), timeout=60, tries=3),
        Scenario("igb-pf-remove-vfs-on", "igb", frozenset({_SRIOV}), timeout=30),
        Scenario("igb-walk", "igb", frozenset(), timeout=150),
    )
}
