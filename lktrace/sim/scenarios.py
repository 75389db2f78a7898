"""The SR-IOV scenarios of the LKML report, on the stock and the v14-patched kernel.

Each scenario boots a :class:`~lktrace.sim.kernel.Kernel`, creates its
devices, spawns the tasks that race (sysfs writers, pciehp IRQ threads and
some unrelated background lock traffic) and runs them in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lktrace.sim import kernel as kn
from lktrace.sim.engine import MS, US, Engine
from lktrace.sim.kernel import IAVF, STOCK, V14, Flavor, Kernel

#: CLOCK_MONOTONIC of the first event: about half an hour after boot.
BOOT_NS = 1_843_000_000_000


@dataclass(frozen=True)
class PathScenario:
    """A scenario built from kernel paths: its kernel and how it sets the race up."""

    description: str
    flavor: Flavor
    build: Callable[[Engine, Kernel], None]

    def write(self, name: str, path: Path, seed: int, command: str) -> Path:
        """Run the scenario with ``seed`` and write its trace to ``path``."""
        eng = Engine(seed, BOOT_NS + (seed % 997) * 7 * MS)
        k = Kernel(self.flavor, heap_seed=seed)
        self.build(eng, k)
        eng.run()
        return eng.write(
            path,
            kernel=self.flavor.release,
            kernel_version=self.flavor.version,
            scenario=name,
            seed=seed,
            command=command,
        )


def background(eng: Engine, k: Kernel, span_ms: int) -> None:
    """Unrelated lock traffic over about ``span_ms``: udev, link watch, NetworkManager."""
    eng.spawn("systemd-udevd", 431, kn.udev_reads(k, 2 + span_ms // 30), eng.jitter(0, MS))
    eng.spawn("kworker/u8:2", 1187, kn.linkwatch_work(k, 1 + span_ms // 100), eng.jitter(0, MS))
    nm_requests = kn.netlink_requests(k, 1 + span_ms // 150)
    eng.spawn("NetworkManager", 812, nm_requests, eng.jitter(0, 2 * MS), tid=845)


def _sriov_pf(k: Kernel, bdf: str, num_vfs: int) -> kn.PciDev:
    pf = k.sriov_pf(bdf, num_vfs)
    for vf in pf.vfs:
        vf.driver = IAVF
    return pf


def stock_deadlock(eng: Engine, k: Kernel) -> None:
    """remove_store and unbind_store on one PF, started so that each blocks on the other.

    remove_store holds the rescan lock for at least 40 us of ``pci_stop_dev()``
    work before it wants the PF's device_lock; unbind_store starts 2-20 us
    after it and has the device_lock within 20 us, then spends 150 us and more
    in ``ice_remove()`` before it wants the rescan lock: whatever the seed, each
    ends up waiting for the lock the other holds.
    """
    pf = _sriov_pf(k, "0000:01:00.0", 4)
    start = 200 * US + eng.jitter(0, 300 * US)
    eng.spawn("bash", 2417, kn.echo_remove(k, pf), start)
    eng.spawn("bash", 2431, kn.echo_unbind(k, pf), start + eng.jitter(2 * US, 20 * US))
    # The rest of the machine carries on for a while after the two hang.
    background(eng, k, 300)


def stock_sequential(eng: Engine, k: Kernel) -> None:
    """unbind_store, then remove_store on the same PF once the first is done."""
    pf = _sriov_pf(k, "0000:01:00.0", 4)
    unbind = eng.spawn("bash", 2431, kn.echo_unbind(k, pf), 200 * US + eng.jitter(0, 300 * US))
    eng.spawn("bash", 2417, kn.echo_remove(k, pf), eng.jitter(50 * MS, 400 * MS), after=unbind)
    background(eng, k, 1600)


def stock_selfdeadlock(eng: Engine, k: Kernel) -> None:
    """A surprise removal nests pci_lock_rescan_remove() through sriov_del_vfs().

    The pciehp IRQ thread holds the rescan lock while it unbinds the PF, whose
    ``ice_remove()`` disables SR-IOV and asks for the rescan lock again; a
    later bus rescan from user space queues behind it.
    """
    pf = _sriov_pf(k, "0000:01:00.0", 4)
    port = k.port("0000:00:1c.0", 24, pf)
    eng.spawn("irq/24-pciehp", 176, kn.hotplug_removal(k, port), 150 * US + eng.jitter(0, 300 * US))
    eng.spawn("bash", 2502, kn.echo_rescan(k), eng.jitter(300 * MS, 800 * MS))
    background(eng, k, 900)


def patched(eng: Engine, k: Kernel) -> None:
    """The v14 kernel: the fixed remove_store, depth-2 nesting, and the races still open.

    - slot 00:1c.0 is surprise-removed while its PF 01:00.0 has VFs: the IRQ
      thread nests the rescan lock to depth 2 in ``sriov_del_vfs()``;
    - meanwhile ``remove`` of PF 02:00.0 takes device_lock first, then waits
      for the rescan lock until the hotplug is done;
    - ``unbind`` of PF 03:00.0, later a removal of its slot (rescan lock,
      then device_lock): the unbind_store vs hotplug order, predicted only;
    - ``sriov_numvfs`` = 4 on PF 04:00.0 (device_lock, then the rescan lock in
      ``sriov_add_vfs()``), later a removal of its slot that nests again.
    """
    slot_a = k.port("0000:00:1c.0", 24, _sriov_pf(k, "0000:01:00.0", 4))
    removed = _sriov_pf(k, "0000:02:00.0", 2)
    unbound = _sriov_pf(k, "0000:03:00.0", 2)
    slot_b = k.port("0000:00:1c.4", 25, unbound)
    enabled = k.sriov_pf("0000:04:00.0", 0)
    slot_c = k.port("0000:00:1d.0", 26, enabled)

    t0 = 150 * US + eng.jitter(0, 300 * US)
    eng.spawn("irq/24-pciehp", 176, kn.hotplug_removal(k, slot_a), t0)
    eng.spawn("bash", 2417, kn.echo_remove(k, removed), t0 + eng.jitter(40 * US, 200 * US))

    t1 = 3000 * MS + eng.jitter(0, 200 * MS)
    unbind = eng.spawn("bash", 2431, kn.echo_unbind(k, unbound), t1)
    hp_b = kn.hotplug_removal(k, slot_b)
    eng.spawn("irq/25-pciehp", 179, hp_b, eng.jitter(400 * MS, 900 * MS), after=unbind)

    t2 = 6000 * MS + eng.jitter(0, 200 * MS)
    numvfs = eng.spawn("bash", 2466, kn.echo_sriov_numvfs(k, enabled, 4), t2)
    hp_c = kn.hotplug_removal(k, slot_c)
    eng.spawn("irq/26-pciehp", 182, hp_c, eng.jitter(400 * MS, 900 * MS), after=numvfs)
    background(eng, k, 8500)


PATH_SCENARIOS = {
    "stock-deadlock": PathScenario(
        "stock kernel: remove_store and unbind_store deadlock AB-BA on a PF's device_lock "
        "and the rescan lock",
        STOCK,
        stock_deadlock,
    ),
    "stock-sequential": PathScenario(
        "stock kernel: unbind_store, then remove_store on the same PF; no hang, the "
        "inversion only predicted",
        STOCK,
        stock_sequential,
    ),
    "stock-selfdeadlock": PathScenario(
        "stock kernel: a pciehp surprise removal nests pci_lock_rescan_remove() and hangs "
        "on itself",
        STOCK,
        stock_selfdeadlock,
    ),
    "patched": PathScenario(
        "v14 kernel: reordered remove_store, reentrant rescan lock (depth 2 in pciehp), "
        "unbind and sriov_numvfs vs hotplug still inverted; no hang",
        V14,
        patched,
    ),
}
