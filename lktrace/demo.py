"""``lktrace demo``: simulate the SR-IOV race and show what ``analyze`` finds in it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from lktrace.replay.analyze import analyze
from lktrace.replay.render import render
from lktrace.sim import SCENARIOS, simulate
from lktrace.trace import read_trace

INTRO = """\
[bold]lktrace demo[/]: {description}.
No kernel is needed: the simulator walks the real kernel call paths and writes
the trace `sudo lktrace record` would have written ([dim]{where}[/]).
Here is `lktrace analyze` on it:
"""

HOW_TO_READ = """
[bold]How to read it[/]
- A DEADLOCK happened: each task waits for a lock the other holds; both hang for good.
- The INVERSION is why: one path takes the rescan lock then the PF's device_lock, the
  other takes them the other way round. lockdep cannot see it (device locks are
  "novalidate"); lktrace recognises device_lock from the mutex address.
- The stacks say where each lock was taken: fix one path so both agree on the order
  (the v14 patch takes device_lock first in remove_store).
Next: `mkdir stock; lktrace simulate stock-sequential -o stock/seq.parquet` and `lktrace analyze
stock/seq.parquet` predict the same inversion from a run that did not hang; with
`lktrace simulate stock-selfdeadlock -o stock/hotplug.parquet` and `lktrace simulate
patched -o fixed.parquet`, `lktrace diff stock/ fixed.parquet` shows what the fix changed.
"""


REAL_TRACE = Path(__file__).parent / "data" / "real-6.12-rootport-remove-vs-numvfs.parquet"

REAL_INTRO = """\
[bold]lktrace demo --real[/]: a trace `lktrace record` took on a real kernel
(Debian 6.12.117, in the project's QEMU lab, see lab/): the PCIe root port's
`remove` and the PF's `sriov_numvfs` = 0, 0.3 s apart, hung for good in an
AB-BA deadlock on `pci_rescan_remove_lock` and the PF's `device_lock`.
Here is `lktrace analyze` on it:
"""


def run_real_demo(console: Console) -> None:
    """Analyse the real-kernel deadlock trace shipped with lktrace."""
    console.print(REAL_INTRO)
    render(analyze([read_trace(REAL_TRACE)]), console)


def run_demo(
    console: Console, scenario: str = "stock-deadlock", output: Path | None = None
) -> None:
    """Simulate ``scenario`` into ``output`` (a temporary file by default) and analyse it."""
    with tempfile.TemporaryDirectory(prefix="lktrace-demo-") as tmp:
        path = simulate(scenario, output or Path(tmp) / f"{scenario}.parquet")
        description = SCENARIOS[scenario].description
        where = path if output else "a temporary file: -o FILE keeps it"
        console.print(INTRO.format(description=description, where=where))
        render(analyze([read_trace(path)]), console)
        if scenario == "stock-deadlock":
            console.print(HOW_TO_READ)
