"""Which Debian kernel a lab version name means, and how that kernel is packaged.

A lab kernel is named by its series (``6.1``, ``6.12``, ``6.18``, ``7.2``) or its
full ABI name (``6.1.0-56-amd64``, ``6.18.15+deb13-amd64``).  The series resolves
to the newest ``-amd64`` flavour in the lab's archive (lab/archive.py);
everything cached is keyed by the ABI name.  (Their modules differ in
compression, .ko on 6.1 and .ko.xz later: the initramfs step follows
modules.dep, so it needs no case for it.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from lab import archive

# bookworm names its own 6.1 kernels "6.1.0-NN-amd64" and the 6.12 kernels it
# carries from trixie "6.12.NN+deb12-amd64"; trixie, trixie-backports and sid
# name theirs "X.Y.Z+debNN-amd64" (deb13 for trixie's, deb14 for forky's).
_BOOKWORM = {
    "6.1": re.compile(r"^linux-image-(6\.1\.0-\d+-amd64)$"),
    "6.12": re.compile(r"^linux-image-(6\.12\.\d+\+deb12-amd64)$"),
}
_LATER = re.compile(r"^linux-image-(\d+\.\d+\.\d+\+deb1[3-9]-amd64)$")
_SERIES_NAME = re.compile(r"^(\d+)\.(\d+)$")
#: The lab's kernel matrix: the SR-IOV rescan-lock history on Debian's builds (the
#: README's "One bug through five kernels"). 7.0 has no modules package in the
#: archive (it cannot boot), so 7.2 stands for the replacement.
MATRIX = ("6.1", "6.12", "6.16", "6.18", "7.2")
#: Debian's packaging since 7.0: ``linux-image-V`` is a meta package, the kernel
#: is in ``linux-binary-V`` and the modules in ``linux-modules-V``.
SPLIT_PACKAGES_SINCE = (7, 0)


class RescanLocking(Enum):
    """Where a build's SR-IOV paths take pci_rescan_remove_lock (drivers/pci/iov.c).

    Checked per Debian build by which functions call pci_lock_rescan_remove() in
    its vmlinux (besides remove_store's and pciehp's callers).
    """

    #: Before 05703271c3cd: only removal, rescan and hotplug take it (6.16).
    NONE = "none"
    #: 05703271c3cd (v6.17-rc1): taken in sriov_add_vfs/sriov_del_vfs (inlined into
    #: sriov_enable/sriov_disable), not reentrant: a PF's .remove() under remove_store
    #: takes it again (6.17, 6.18).
    SRIOV_ENABLE_DISABLE = "sriov_enable/sriov_disable"
    #: Its revert 2fa119c0e5e5 and a5338e365c45 (v7.0-rc1): taken around
    #: sriov_configure in sriov_numvfs_store; backported to bookworm's 6.1.0-47 and
    #: 6.12.107 and later.
    NUMVFS_STORE = "sriov_numvfs_store"


#: The first bookworm builds with a5338e365c45 backported, by series.
_NUMVFS_STORE_BACKPORTS = {(6, 1): 47, (6, 12): 107}


@dataclass(frozen=True)
class Kernel:
    """One Debian kernel build, named by its ABI (``uname -r``)."""

    abi: str

    @property
    def version(self) -> tuple[int, int]:
        major, minor = re.match(r"(\d+)\.(\d+)", self.abi).groups()  # type: ignore[union-attr]
        return int(major), int(minor)

    @property
    def build(self) -> int:
        """Debian's build within the series: NN of 6.1.0-NN, Z of X.Y.Z+debNN."""
        m = re.match(r"\d+\.\d+\.(\d+)(?:-(\d+))?", self.abi)
        return int(m[2] or m[1])  # type: ignore[index]

    @property
    def packages(self) -> list[str]:
        """The packages that hold its vmlinuz and its modules."""
        if self.version >= SPLIT_PACKAGES_SINCE:
            return [f"linux-binary-{self.abi}", f"linux-modules-{self.abi}"]
        return [f"linux-image-{self.abi}"]

    @property
    def bookworm(self) -> bool:
        """Whether bookworm ships it, headers and all (the lab's root file system is bookworm)."""
        return any(p.match(f"linux-image-{self.abi}") for p in _BOOKWORM.values())

    @property
    def rescan_locking(self) -> RescanLocking:
        if self.version >= (7, 0):
            return RescanLocking.NUMVFS_STORE
        if self.version >= (6, 17):
            return RescanLocking.SRIOV_ENABLE_DISABLE
        first = _NUMVFS_STORE_BACKPORTS.get(self.version)
        if first is not None and self.build >= first:
            return RescanLocking.NUMVFS_STORE
        return RescanLocking.NONE

    @property
    def headers_package(self) -> str:
        return f"linux-headers-{self.abi}"


def _abi_key(abi: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def _pattern(name: str) -> re.Pattern[str] | None:
    if name in _BOOKWORM:
        return _BOOKWORM[name]
    series = _SERIES_NAME.match(name)
    if series is None:
        return None
    return re.compile(rf"^linux-image-({series[1]}\.{series[2]}\.\d+\+deb1[3-9]-amd64)$")


def resolve(name: str) -> Kernel:
    """Turn a series (``6.18``) or a full ABI name into a :class:`Kernel`."""
    pattern = _pattern(name)
    if pattern is None:
        full = f"linux-image-{name}"
        if not any(p.match(full) for p in (*_BOOKWORM.values(), _LATER)):
            raise ValueError(
                f"unknown kernel {name!r}: use a series like 6.1 or 6.18, or an ABI like "
                "6.1.0-56-amd64 or 6.18.15+deb13-amd64"
            )
        return Kernel(name)
    abis = [m.group(1) for p in archive.package_names("linux-image-") if (m := pattern.match(p))]
    if not abis:
        raise ValueError(f"the archive has no -amd64 linux-image for kernel {name}")
    return Kernel(max(abis, key=_abi_key))
