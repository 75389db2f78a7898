"""Which Debian kernel a lab version name means, and how that kernel differs.

A lab kernel is named by its series (``6.1``, ``6.12``) or its full ABI name
(``6.1.0-56-amd64``).  The series resolves to the newest ``-amd64`` flavour
that the host's apt knows; everything cached is keyed by the ABI name.
(Their modules differ in compression, .ko on 6.1 and .ko.xz on 6.12: the
initramfs step follows modules.dep, so it needs no case for it.)
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from lab.shell import apt_update_if_empty

# bookworm names its own 6.1 kernels "6.1.0-NN-amd64" and the 6.12 kernels it
# carries from trixie "6.12.NN+deb12-amd64".
_SERIES = {
    "6.1": re.compile(r"^linux-image-(6\.1\.0-\d+-amd64)$"),
    "6.12": re.compile(r"^linux-image-(6\.12\.\d+\+deb12-amd64)$"),
}


@dataclass(frozen=True)
class Kernel:
    """One Debian kernel build, named by its ABI (``uname -r``)."""

    abi: str

    @property
    def image_package(self) -> str:
        return f"linux-image-{self.abi}"

    @property
    def headers_package(self) -> str:
        return f"linux-headers-{self.abi}"


def _abi_key(abi: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def resolve(name: str) -> Kernel:
    """Turn ``6.1``/``6.12`` or a full ABI name into a :class:`Kernel`."""
    if name not in _SERIES:
        if not any(p.match(f"linux-image-{name}") for p in _SERIES.values()):
            raise ValueError(
                f"unknown kernel {name!r}: use 6.1, 6.12 or an ABI like 6.1.0-56-amd64"
            )
        return Kernel(name)
    apt_update_if_empty()
    out = subprocess.run(
        ["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True, check=True
    ).stdout.split()
    abis = [m.group(1) for p in out if (m := _SERIES[name].match(p))]
    if not abis:
        raise ValueError(f"apt knows no linux-image for kernel {name} (is bookworm-security on?)")
    return Kernel(max(abis, key=_abi_key))
