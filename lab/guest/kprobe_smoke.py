"""Prove kprobes work in the guest with a bare BCC program, before lktrace is involved.

Counts calls of the lock functions lktrace probes while numvfs-cycle runs,
lists how many symbols of each name lktrace cares about /proc/kallsyms has,
and whether BCC can use fentry here.
Usage: kprobe_smoke.py OUT.json (guest python3, with Debian's python3-bpfcc).
"""

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bcc import BPF

PROBED = ["mutex_lock", "mutex_unlock", "pci_lock_rescan_remove", "pci_unlock_rescan_remove"]
WANTED = [
    *PROBED,
    "mutex_lock_interruptible", "mutex_lock_killable", "mutex_trylock",
    "mutex_lock_nested", "mutex_lock_io", "_mutex_lock_killable", "_mutex_trylock_nest_lock",
    "remove_store", "unbind_store", "sriov_numvfs_store", "rescan_store",
    "pci_rescan_remove_lock", "pci_bus_type",
    "pci_stop_and_remove_bus_device_locked", "sriov_del_vfs", "sriov_add_vfs",
    "pci_iov_remove_virtfn", "device_release_driver", "pciehp_ist",
]  # fmt: skip

PROGRAM = """
BPF_ARRAY(counts, u64, %d);
static int count(int i) { u64 *v = counts.lookup(&i); if (v) __sync_fetch_and_add(v, 1); return 0; }
%s
"""


def main() -> None:
    kallsyms = Counter(line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines())
    fns = "\n".join(
        f"int on_{i}(struct pt_regs *ctx) {{ return count({i}); }}" for i in range(len(PROBED))
    )
    t0 = time.monotonic()
    b = BPF(text=PROGRAM % (len(PROBED), fns))
    compiled = time.monotonic() - t0
    for i, fn in enumerate(PROBED):
        b.attach_kprobe(event=fn, fn_name=f"on_{i}")
    subprocess.run(["/share/scenarios/numvfs-cycle.sh"], check=True)
    counts = {fn: b["counts"][i].value for i, fn in enumerate(PROBED)}
    result = {
        "compile_s": round(compiled, 1),
        "counts": counts,
        "fentry": BPF.support_kfunc(),
        "symbols": {fn: kallsyms[fn] for fn in WANTED},
    }
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1))


main()
