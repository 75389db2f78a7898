"""The named scenarios the lab runs (scripts in guest/scenarios/) and what each should do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    #: Whether its writers hang for good on the stock 6.1 and 6.12 kernels.
    hangs: bool
    #: Seconds the guest waits for the recorded script before stopping the recorder.
    timeout: float


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("rootport-remove-vs-numvfs", hangs=True, timeout=30),
        Scenario("rootport-remove-then-numvfs", hangs=False, timeout=120),
        Scenario("pf-remove-vs-unbind", hangs=False, timeout=120),
        Scenario("numvfs-cycle", hangs=False, timeout=120),
    )
}
