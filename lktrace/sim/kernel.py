"""The simulated kernel: PCI devices, their locks and the call paths that take them.

The paths follow drivers/pci (pci-sysfs.c, remove.c, iov.c, hotplug/pciehp_*.c),
drivers/base (bus.c, dd.c, core.c) and the ice/iavf drivers of a 6.12-era
kernel: each kernel function that matters is a generator named after it, and
every lock is taken where the real one is, through the API a probe sees
(``device_lock()`` is inline, so its events are ``mutex_lock`` called from the
function that inlines it).

Both kernels carry 05703271c3cd ("PCI/IOV: Add PCI rescan-remove locking when
enabling/disabling SR-IOV"): ``sriov_add_vfs()``/``sriov_del_vfs()`` take the
rescan lock under the PF's device_lock.  They differ only in :class:`Flavor`,
each field naming the v14 patch it follows.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lktrace.sim.engine import MS, US, Delay, Lock, Mutex, Op, Unlock, call, kfunc

RESCAN = "pci_rescan_remove_lock"
#: Where the globals live in the simulated kernel image.
RESCAN_ADDR = 0xFFFFFFFF83C5B9E0
RTNL_ADDR = 0xFFFFFFFF84117EC0
#: ``&pdev->dev.mutex`` inside a kmalloc-4k ``struct pci_dev``.
_DEV_MUTEX_OFFSET = 0x1A8


@dataclass(frozen=True)
class Flavor:
    """What distinguishes one simulated kernel from another."""

    release: str
    version: str
    #: v14 1/2 "PCI/IOV: Make pci_lock_rescan_remove() reentrant and protect
    #: sriov_add_vfs/sriov_del_vfs": an owner task and a depth counter.
    reentrant_rescan: bool
    #: v14 2/2 "PCI: Fix AB-BA deadlock between device_lock and
    #: pci_rescan_remove_lock in remove_store": kill_device() and
    #: device_release_driver() before pci_stop_and_remove_bus_device_locked().
    remove_unbinds_first: bool


STOCK = Flavor(
    release="6.12.0-sim-stock",
    version="#1 SMP PREEMPT_DYNAMIC 6.12.0 with 05703271c3cd (simulated)",
    reentrant_rescan=False,
    remove_unbinds_first=False,
)
V14 = Flavor(
    release="6.12.0-sim-v14",
    version="#1 SMP PREEMPT_DYNAMIC 6.12.0 with PCI/IOV v14 (simulated)",
    reentrant_rescan=True,
    remove_unbinds_first=True,
)


@dataclass(frozen=True)
class Driver:
    """A PCI driver: its ``.remove()`` and optional ``.sriov_configure()``."""

    name: str
    remove: Callable[[Kernel, PciDev], Iterator[Op]]
    sriov_configure: Callable[[Kernel, PciDev, int], Iterator[Op]] | None = None


@dataclass(eq=False)
class PciDev:
    """A PCI function and the ``struct device`` mutex inside it."""

    bdf: str
    mutex: Mutex
    driver: Driver | None = None
    physfn: PciDev | None = None
    vfs: list[PciDev] = field(default_factory=list)
    #: Other mutexes of the bound driver, by role (e.g. ``vfs.table_lock``).
    locks: dict[str, Mutex] = field(default_factory=dict)
    added: bool = True
    present: bool = True


@dataclass(eq=False)
class Port:
    """A hotplug-capable downstream port, its IRQ and the PFs on its subordinate bus."""

    bdf: str
    irq: int
    state_lock: Mutex
    pfs: tuple[PciDev, ...]

    @property
    def bus(self) -> list[PciDev]:
        """The functions on the subordinate bus, each PF followed by its VFs."""
        return [d for pf in self.pfs for d in (pf, *pf.vfs)]


class Kernel:
    """One booted simulated kernel: its flavor, global locks and heap."""

    def __init__(self, flavor: Flavor, heap_seed: int) -> None:
        self.flavor = flavor
        self.rescan = Mutex(RESCAN_ADDR, RESCAN, RESCAN, reentrant=flavor.reentrant_rescan)
        self.rtnl = Mutex(RTNL_ADDR, "mutex@rtnl_lock", f"{RTNL_ADDR:#x}")
        self._heap = 0xFFFF888104000000 + (heap_seed % 0x400) * 0x100000

    def alloc(self, size: int) -> int:
        """A fresh slab address for an object of ``size`` bytes."""
        self._heap += -(-size // 64) * 64
        return self._heap

    def mutex(self, caller: str, size: int = 256, offset: int = 0x48) -> Mutex:
        """A mutex in a heap object, classed by the function that locks it."""
        addr = self.alloc(size) + offset
        return Mutex(addr, f"mutex@{caller}", f"{addr:#x}")

    def pci_dev(self, bdf: str, driver: Driver | None = None) -> PciDev:
        """A PCI function whose ``dev.mutex`` address is stable for its BDF."""
        base = 0xFFFF888110000000 + (zlib.crc32(bdf.encode()) & 0x3FFFF) * 0x1000
        mutex = Mutex(base + _DEV_MUTEX_OFFSET, "device_lock", f"pci:{bdf}")
        dev = PciDev(bdf, mutex, driver)
        if driver is ICE:
            dev.locks["table_lock"] = self.mutex("ice_free_vfs")
        return dev

    def sriov_pf(self, bdf: str, num_vfs: int, vf_driver: Driver | None = None) -> PciDev:
        """An ``ice`` PF with ``num_vfs`` VFs at the next functions (ARI numbering)."""
        pf = self.pci_dev(bdf, ICE)
        for _ in range(num_vfs):
            self.add_vf(pf, vf_driver)
        return pf

    def add_vf(self, pf: PciDev, driver: Driver | None) -> PciDev:
        """Create the next VF of ``pf`` (what ``pci_iov_add_virtfn()`` allocates)."""
        bus, rest = pf.bdf.rsplit(":", 1)
        slot, fn = rest.split(".")
        vf = self.pci_dev(f"{bus}:{slot}.{int(fn) + len(pf.vfs) + 1}", driver)
        vf.physfn = pf
        pf.vfs.append(vf)
        return vf

    def port(self, bdf: str, irq: int, *pfs: PciDev) -> Port:
        """A pciehp port with ``pfs`` (and their VFs) on its subordinate bus."""
        return Port(bdf, irq, self.mutex("pciehp_handle_presence_or_link_change"), pfs)


# -- lock helpers: inline wrappers, no frame of their own --------------------


def device_lock(dev: PciDev) -> Iterator[Op]:
    """``device_lock()``: inline ``mutex_lock(&dev->mutex)``."""
    yield Lock(dev.mutex, "mutex_lock")


def device_unlock(dev: PciDev) -> Iterator[Op]:
    """``device_unlock()``: inline ``mutex_unlock(&dev->mutex)``."""
    yield Unlock(dev.mutex, "mutex_unlock")


def pci_lock_rescan_remove(k: Kernel) -> Iterator[Op]:
    """The wrapper is probed itself; its inner ``mutex_lock`` is not recorded."""
    yield Lock(k.rescan, "pci_lock_rescan_remove")


def pci_unlock_rescan_remove(k: Kernel) -> Iterator[Op]:
    """Release one level of the rescan lock."""
    yield Unlock(k.rescan, "pci_unlock_rescan_remove")


def locked(m: Mutex, *work: Delay) -> Iterator[Op]:
    """``mutex_lock(m)``, some work, ``mutex_unlock(m)`` in the current function."""
    yield Lock(m, "mutex_lock")
    yield from work
    yield Unlock(m, "mutex_unlock")


# -- entry paths ------------------------------------------------------------

SYSCALL = ("entry_SYSCALL_64_after_hwframe", "do_syscall_64", "x64_sys_call")
KTHREAD = ("ret_from_fork_asm", "ret_from_fork", "kthread")


@kfunc
def kernfs_fop_write_iter(of_mutex: Mutex, attr_store: str, store: Iterator[Op]) -> Iterator[Op]:
    yield Lock(of_mutex, "mutex_lock")
    yield from call(("sysfs_kf_write", attr_store), store)
    yield Unlock(of_mutex, "mutex_unlock")


def sysfs_write(of_mutex: Mutex, attr_store: str, store: Iterator[Op]) -> Iterator[Op]:
    """write(2) on a sysfs attribute: ``kernfs_fop_write_iter`` holds ``of->mutex``."""
    path = (*SYSCALL, "__x64_sys_write", "ksys_write", "vfs_write")
    yield from call(path, kernfs_fop_write_iter(of_mutex, attr_store, store))


# -- drivers/base ------------------------------------------------------------


@kfunc
def device_release_driver_internal(k: Kernel, dev: PciDev) -> Iterator[Op]:
    yield from device_lock(dev)
    if dev.driver is not None:
        yield from __device_release_driver(k, dev)
    yield from device_unlock(dev)


@kfunc
def __device_release_driver(k: Kernel, dev: PciDev) -> Iterator[Op]:
    drv = dev.driver
    assert drv is not None
    yield Delay(5 * US, 20 * US)
    yield from call(("device_remove", "pci_device_remove"), drv.remove(k, dev))
    dev.driver = None
    yield Delay(10 * US, 40 * US)


def device_release_driver(k: Kernel, dev: PciDev) -> Iterator[Op]:
    """Unbind ``dev`` from its driver, if it has one."""
    yield from call(("device_release_driver",), device_release_driver_internal(k, dev))


@kfunc
def unbind_store(k: Kernel, drv: Driver, dev: PciDev) -> Iterator[Op]:
    yield Delay(3 * US, 10 * US)
    if dev.driver is drv:
        yield from call(("device_driver_detach",), device_release_driver_internal(k, dev))


@kfunc
def device_del(k: Kernel, dev: PciDev) -> Iterator[Op]:
    yield from device_lock(dev)
    yield Delay(1 * US, 3 * US)  # kill_device()
    yield from device_unlock(dev)
    yield Delay(20 * US, 80 * US)


@kfunc
def __device_attach(k: Kernel, dev: PciDev, drv: Driver | None) -> Iterator[Op]:
    yield from device_lock(dev)
    if drv is not None:
        yield Delay(200 * US, 900 * US)
        dev.driver = drv
    yield from device_unlock(dev)


# -- drivers/pci: removal ----------------------------------------------------


@kfunc
def pci_stop_dev(k: Kernel, dev: PciDev) -> Iterator[Op]:
    # device_release_driver() takes device_lock even when no driver is bound.
    if dev.added:
        yield Delay(40 * US, 150 * US)
        yield from device_release_driver(k, dev)
        dev.added = False


@kfunc
def pci_destroy_dev(k: Kernel, dev: PciDev) -> Iterator[Op]:
    yield from device_del(k, dev)
    dev.present = False


@kfunc
def pci_stop_and_remove_bus_device(k: Kernel, dev: PciDev) -> Iterator[Op]:
    # Neither an SR-IOV PF nor a VF has a subordinate bus to recurse into.
    yield from call(("pci_stop_bus_device",), pci_stop_dev(k, dev))
    yield from call(("pci_remove_bus_device",), pci_destroy_dev(k, dev))


@kfunc
def pci_stop_and_remove_bus_device_locked(k: Kernel, dev: PciDev) -> Iterator[Op]:
    yield from pci_lock_rescan_remove(k)
    yield from pci_stop_and_remove_bus_device(k, dev)
    yield from pci_unlock_rescan_remove(k)


@kfunc
def remove_store(k: Kernel, dev: PciDev) -> Iterator[Op]:
    yield Delay(5 * US, 15 * US)
    if k.flavor.remove_unbinds_first:
        # v14 2/2: kill_device() under device_lock, then unbind, and only
        # then the rescan lock.
        yield from device_lock(dev)
        yield Delay(1 * US, 3 * US)
        yield from device_unlock(dev)
        yield from device_release_driver(k, dev)
    yield from pci_stop_and_remove_bus_device_locked(k, dev)


@kfunc
def rescan_store(k: Kernel) -> Iterator[Op]:
    yield from pci_lock_rescan_remove(k)
    yield Delay(2 * MS, 6 * MS)
    yield from pci_unlock_rescan_remove(k)


# -- drivers/pci/iov.c -------------------------------------------------------


@kfunc
def pci_iov_remove_virtfn(k: Kernel, pf: PciDev, vf: PciDev) -> Iterator[Op]:
    yield Delay(2 * US, 8 * US)
    if vf.present:
        yield Delay(10 * US, 30 * US)
        yield from pci_stop_and_remove_bus_device(k, vf)
    pf.vfs.remove(vf)


@kfunc
def sriov_del_vfs(k: Kernel, pf: PciDev) -> Iterator[Op]:
    yield from pci_lock_rescan_remove(k)  # 05703271c3cd, in both kernels
    for vf in list(pf.vfs):
        yield from pci_iov_remove_virtfn(k, pf, vf)
    yield from pci_unlock_rescan_remove(k)


@kfunc
def sriov_disable(k: Kernel, pf: PciDev) -> Iterator[Op]:
    yield from sriov_del_vfs(k, pf)
    yield Delay(1000 * MS, 1004 * MS)  # ssleep(1) after clearing VF Enable


@kfunc
def pci_iov_add_virtfn(k: Kernel, pf: PciDev, vf_driver: Driver | None) -> Iterator[Op]:
    yield Delay(30 * US, 90 * US)
    vf = k.add_vf(pf, None)
    yield from call(("pci_bus_add_device", "device_attach"), __device_attach(k, vf, vf_driver))


@kfunc
def sriov_add_vfs(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    yield from pci_lock_rescan_remove(k)  # 05703271c3cd, in both kernels
    for _ in range(num_vfs):
        yield from pci_iov_add_virtfn(k, pf, IAVF)
    yield from pci_unlock_rescan_remove(k)


@kfunc
def sriov_enable(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    yield Delay(100 * MS, 102 * MS)  # msleep(100) after setting VF Enable
    yield from sriov_add_vfs(k, pf, num_vfs)


@kfunc
def sriov_numvfs_store(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    yield Delay(3 * US, 10 * US)
    yield from device_lock(pf)
    drv = pf.driver
    if drv is not None and drv.sriov_configure is not None and num_vfs != len(pf.vfs):
        yield from drv.sriov_configure(k, pf, num_vfs)
    yield from device_unlock(pf)


# -- the ice PF driver and the iavf VF driver --------------------------------


@kfunc
def ice_free_vfs(k: Kernel, pf: PciDev) -> Iterator[Op]:
    yield from call(("pci_disable_sriov",), sriov_disable(k, pf))
    yield from locked(pf.locks["table_lock"], Delay(20 * US, 60 * US))


@kfunc
def ice_remove(k: Kernel, pf: PciDev) -> Iterator[Op]:
    yield Delay(150 * US, 400 * US)
    if pf.vfs:
        yield from ice_free_vfs(k, pf)
    yield Delay(2 * MS, 8 * MS)


@kfunc
def ice_ena_vfs(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    yield Delay(200 * US, 600 * US)
    yield from call(("pci_enable_sriov",), sriov_enable(k, pf, num_vfs))


@kfunc
def ice_sriov_configure(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    if num_vfs:
        yield from call(("ice_pci_sriov_ena",), ice_ena_vfs(k, pf, num_vfs))
    else:
        yield from ice_free_vfs(k, pf)


@kfunc
def iavf_remove(k: Kernel, vf: PciDev) -> Iterator[Op]:
    yield Delay(300 * US, 900 * US)


ICE = Driver("ice", ice_remove, ice_sriov_configure)
IAVF = Driver("iavf", iavf_remove)


# -- pciehp ------------------------------------------------------------------


@kfunc
def pciehp_unconfigure_device(k: Kernel, port: Port) -> Iterator[Op]:
    yield Delay(5 * US, 20 * US)
    yield from pci_lock_rescan_remove(k)
    # Reverse bus order: the VFs go first, then their PF.
    for dev in reversed(port.bus):
        if dev.present:
            yield from pci_stop_and_remove_bus_device(k, dev)
    yield from pci_unlock_rescan_remove(k)


@kfunc
def pciehp_handle_presence_or_link_change(k: Kernel, port: Port) -> Iterator[Op]:
    yield from locked(port.state_lock, Delay(1 * US, 4 * US))
    yield Delay(20 * US, 100 * US)
    yield from call(("pciehp_disable_slot",), pciehp_unconfigure_device(k, port))


@kfunc
def pciehp_ist(k: Kernel, port: Port) -> Iterator[Op]:
    yield Delay(5 * US, 15 * US)
    yield from pciehp_handle_presence_or_link_change(k, port)


def hotplug_removal(k: Kernel, port: Port) -> Iterator[Op]:
    """A surprise removal below ``port``, handled in its IRQ thread."""
    yield from call((*KTHREAD, "irq_thread", "irq_thread_fn"), pciehp_ist(k, port))


# -- sysfs writes the scenarios make ------------------------------------------


def echo_remove(k: Kernel, dev: PciDev) -> Iterator[Op]:
    """``echo 1 > /sys/bus/pci/devices/<dev>/remove``."""
    store = remove_store(k, dev)
    yield from sysfs_write(k.mutex("kernfs_fop_write_iter"), "dev_attr_store", store)


def echo_unbind(k: Kernel, dev: PciDev) -> Iterator[Op]:
    """``echo <dev> > /sys/bus/pci/drivers/<driver>/unbind``."""
    assert dev.driver is not None
    store = unbind_store(k, dev.driver, dev)
    yield from sysfs_write(k.mutex("kernfs_fop_write_iter"), "drv_attr_store", store)


def echo_sriov_numvfs(k: Kernel, pf: PciDev, num_vfs: int) -> Iterator[Op]:
    """``echo N > /sys/bus/pci/devices/<pf>/sriov_numvfs``."""
    store = sriov_numvfs_store(k, pf, num_vfs)
    yield from sysfs_write(k.mutex("kernfs_fop_write_iter"), "dev_attr_store", store)


def echo_rescan(k: Kernel) -> Iterator[Op]:
    """``echo 1 > /sys/bus/pci/rescan``."""
    yield from sysfs_write(k.mutex("kernfs_fop_write_iter"), "bus_attr_store", rescan_store(k))


# -- background lock traffic --------------------------------------------------


@kfunc
def kernfs_seq_start(of_mutex: Mutex) -> Iterator[Op]:
    yield Lock(of_mutex, "mutex_lock")


@kfunc
def kernfs_seq_stop(of_mutex: Mutex) -> Iterator[Op]:
    yield Unlock(of_mutex, "mutex_unlock")


@kfunc
def seq_read_iter(m_lock: Mutex, of_mutex: Mutex) -> Iterator[Op]:
    yield Lock(m_lock, "mutex_lock")
    yield from kernfs_seq_start(of_mutex)
    yield Delay(2 * US, 10 * US)
    yield from kernfs_seq_stop(of_mutex)
    yield Unlock(m_lock, "mutex_unlock")


def udev_reads(k: Kernel, times: int) -> Iterator[Op]:
    """systemd-udevd reading sysfs attributes (``seq_file`` lock, then ``of->mutex``)."""
    m_lock, of_mutex = k.mutex("seq_read_iter"), k.mutex("kernfs_seq_start")
    for _ in range(times):
        path = (*SYSCALL, "__x64_sys_read", "ksys_read", "vfs_read")
        yield from call(path, seq_read_iter(m_lock, of_mutex))
        yield Delay(5 * MS, 55 * MS)


@kfunc
def rtnl_lock(k: Kernel) -> Iterator[Op]:
    yield Lock(k.rtnl, "mutex_lock")


@kfunc
def rtnl_unlock(k: Kernel) -> Iterator[Op]:
    yield Unlock(k.rtnl, "mutex_unlock")


def under_rtnl(k: Kernel, work: Delay) -> Iterator[Op]:
    """``rtnl_lock()``, ``work``, ``rtnl_unlock()``."""
    yield from rtnl_lock(k)
    yield work
    yield from rtnl_unlock(k)


def linkwatch_work(k: Kernel, times: int) -> Iterator[Op]:
    """A kworker running the link-watch work item under the RTNL."""
    for _ in range(times):
        path = (*KTHREAD, "worker_thread", "process_one_work", "linkwatch_event")
        yield from call(path, under_rtnl(k, Delay(5 * US, 40 * US)))
        yield Delay(20 * MS, 180 * MS)


def netlink_requests(k: Kernel, times: int) -> Iterator[Op]:
    """A daemon's RTM_GETLINK requests over netlink."""
    path = (
        *SYSCALL,
        "__x64_sys_sendmsg",
        "__sys_sendmsg",
        "___sys_sendmsg",
        "____sys_sendmsg",
        "netlink_sendmsg",
        "netlink_unicast",
        "netlink_rcv_skb",
        "rtnetlink_rcv_msg",
    )
    for _ in range(times):
        yield from call(path, under_rtnl(k, Delay(10 * US, 80 * US)))
        yield Delay(30 * MS, 270 * MS)
